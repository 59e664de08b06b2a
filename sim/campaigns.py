"""The engine campaigns the simulator drives: one configuration, with or without the reward model.

Fixed prior scales on the JOD scale, the same in every world (the empirical-Bayes campaigns,
`refit_prior_at`, learn them from the labels): a clip's quality has prior sd `QUALITY_SD` =
1.5 JOD in all (a typical spread of a JOD study), half of its variance given to what the
reward model's criteria can explain
(each standardised criterion's weight w with w^2 + (w/2)^2 per criterion, the context offset
half the weight's sd) and half to the residual; without the reward model the residual has it
all (sd 1.5).

The total matters more than the split. The earlier scales (weight sd 1, context 0.5,
residual 1.5) gave quality a prior sd of sqrt(5 (1 + 0.25) + 1.5^2) = 2.9 JOD: under
random pairs that cost little, but information gain asks close pairs, whose answers carry
almost no information about the distance between far-apart clips, so the prior set the scale:
its posterior mean came out 1.3-1.6x too spread and its 90 % intervals covered 0.60 at 20
labels per clip (benchmarks/results/calibration.md), and the ADF evidence of such labels is
flat in the scales, so empirical Bayes cannot repair it from them. A wider prior (residual
sd 3) made information gain without a reward model explore more, but the posterior mean
over-spreads (benchmarks/results/posterior_spread.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine import (
    Campaign,
    CampaignConfig,
    CriterionQuestions,
    PriorScales,
    SelectionOptions,
    SideBias,
    refit_schedule,
)
from engine.adapters import JOD_NOISE_SD
from engine.reliability import KEEP_PRIOR
from engine.state import QUALITY_SD, quality_prior
from sim.worlds import Problem

prior_scales = quality_prior  # the engine's JOD-scale prior, which the service uses too


# The simulator's earlier scales, kept for benchmarks that measure what they did.
WIDE_PRIOR = PriorScales(weight_scale=1.0, context_scale=0.5, residual_scale=1.5)
# Empirical-Bayes refits at `refit_schedule(n)` labels (engine.empirical_bayes: 2n, 4n, 8n, ...),
# the schedule the service's background refits follow too (api/refits.py).


# Rater reliability: the engine's default keep prior (engine.reliability.KEEP_PRIOR), the
# service's too, and 5 % of raters may be pure random clickers.
LAPSE_PRIOR = KEEP_PRIOR


def build_campaign(
    problem: Problem,
    *,
    reward_model: bool,
    selection: SelectionOptions | None = None,
    lapse_prior: tuple[float, float] | None = None,
    learn_rater_noise: bool = False,
    refit_keep_prior: bool = False,
    refit_prior_at: tuple[int, ...] = (),
    prior_refit: str = "scales",
    structure: str = "dense",
    prior: PriorScales | None = None,
    noise_sd: float = JOD_NOISE_SD,
    side_bias: SideBias | None = None,
    both_threshold: float | None = None,
    gold_rate: float = 0.0,
    gold_margin: float = 3.0,
    gold_seed: int = 0,
    min_labels: int = CampaignConfig.min_labels,
    items: int | None = None,
    feature_gate: bool = False,
    contexts: bool = True,
    criterion_questions: CriterionQuestions | None = None,
) -> Campaign:
    """A CPU float64 campaign over the problem's clips (scores only when `reward_model`;
    rater lapses modelled with a Beta `lapse_prior` on the keep probability when given; each
    rater's noise learned when `learn_rater_noise`; the prior refitted by empirical Bayes
    once the label count reaches each of `refit_prior_at` (the keep prior too when
    `refit_keep_prior`); the posterior kept as
    `structure` says, engine.forms; `prior` (default `prior_scales` of the criteria used) and
    `noise_sd` what it assumes, the simulator's defaults unless a benchmark varies them; gold
    questions at `gold_rate`, engine.gold; each clip given `min_labels` labels at least,
    engine.exposure; only the first `items` clips added when given, the others for the
    caller to add with `add_problem_clips`; the problem's feature vectors through the
    engine's feature gate when `feature_gate`, engine.gating; every clip in one context
    unless `contexts`; criterion questions as `criterion_questions` says, engine.criteria)."""
    use_scores = reward_model and problem.scores is not None
    if feature_gate and (problem.features is None or not use_scores):
        raise ValueError("a feature gate needs the problem's features and the reward model")
    config = CampaignConfig(
        criteria=problem.criteria if use_scores else (),
        prior=prior or prior_scales(len(problem.criteria) if use_scores else 0),
        pair_scope="group" if problem.pair_scope == "group" else "any",
        tie_margin=problem.tie_margin,
        noise_sd=noise_sd,
        selection=selection or SelectionOptions(),
        lapse_prior=lapse_prior,
        learn_rater_noise=learn_rater_noise,
        refit_keep_prior=refit_keep_prior,
        refit_prior_at=refit_prior_at,
        prior_refit=prior_refit,
        structure=structure,  # type: ignore[arg-type]
        side_bias=side_bias,
        both_threshold=both_threshold,
        gold_rate=gold_rate,
        gold_margin=gold_margin,
        gold_seed=gold_seed,
        min_labels=min_labels,
        feature_dim=problem.features.shape[1]
        if feature_gate and problem.features is not None
        else 0,
        criterion_questions=criterion_questions,
    )
    campaign = Campaign(config, device="cpu")
    first = slice(0, problem.n_items if items is None else items)
    add_clips(
        campaign,
        problem.scores[first] if use_scores else None,  # type: ignore[index]
        problem.contexts[first],
        problem.groups[first],
        None if problem.features is None else problem.features[first],
        feature_gate=feature_gate,
        contexts=contexts,
    )
    return campaign


@dataclass(frozen=True)
class ScoringOptions:
    """What the scoring posterior assumes about raters' lapses (`build_scoring_campaign`):
    the keep prior (None: no lapse model) and whether its refits refit it too; the defaults
    are the service's."""

    lapse_prior: tuple[float, float] | None = LAPSE_PRIOR
    refit_keep_prior: bool = False


def build_scoring_campaign(problem: Problem, options: ScoringOptions | None = None) -> Campaign:
    """The engine posterior every strategy's labels are scored by (`sim.runner.Scorer`): the
    reward-model prior, its split between the criteria and the residual refitted at
    `refit_schedule` with the total kept (`prior_refit="split"`, docs/MATH.md §1), and each
    rater's random-click rate and noise learned, as the service learns them, under
    `LAPSE_PRIOR` (the labels must say who answered).

    Each label is scored for its rater under its cavity (docs/MATH.md §3, rater noise); under
    the posterior that held it, honest raters' noise ran to ~0.6x the truth and the
    intervals were over-confident, so noise was fixed here. Five n100-rm0.7-clickers worlds,
    random pairs, 4,000 labels: 90 % / 50 % coverage 0.874 / 0.488 and RMSE 0.359 with noise
    learned, 0.878 / 0.486 and 0.356 with it fixed. `options` varies the lapse model
    (benchmarks.coverage_lapse)."""
    options = options or ScoringOptions()
    return build_campaign(
        problem,
        reward_model=True,
        both_threshold=problem.both_threshold,
        lapse_prior=options.lapse_prior,
        refit_keep_prior=options.refit_keep_prior,
        learn_rater_noise=True,
        refit_prior_at=refit_schedule(problem.n_items),
        prior_refit="split",
    )


def add_problem_clips(campaign: Campaign, problem: Problem, clips: range) -> range:
    """Add the problem's clips `clips` (the next ones in order: the campaign's indices are
    the problem's) with their scores when the campaign reads scores, their features when it
    gates by them, contexts and groups."""
    if clips.start != campaign.n_items:
        raise ValueError(f"the next clip to add is {campaign.n_items}, not {clips.start}")
    index = list(clips)
    use_scores = bool(campaign.config.criteria) and problem.scores is not None
    return add_clips(
        campaign,
        problem.scores[index] if use_scores else None,  # type: ignore[index]
        problem.contexts[index],
        problem.groups[index],
        None if problem.features is None else problem.features[index],
        feature_gate=campaign.config.feature_dim > 0,
        contexts=True,
    )


def add_clips(
    campaign: Campaign,
    scores: np.ndarray | None,
    context: np.ndarray,
    group: np.ndarray,
    features: np.ndarray | None,
    *,
    feature_gate: bool,
    contexts: bool,
) -> range:
    """Add clips to a campaign `build_campaign` made, the way it adds the problem's: scores
    (None without the reward model), contexts unless `contexts` is off, features through the
    gate when `feature_gate`. A clip added after labels is never rated: its posterior is the
    engine's prediction from the reward model, the weights and the gate (MATH.md §8)."""
    return campaign.add_clips(
        scores,
        count=len(group),
        contexts=context.tolist() if contexts else None,
        groups=group.tolist(),
        features=features if feature_gate else None,
    )


__all__ = [
    "LAPSE_PRIOR",
    "QUALITY_SD",
    "WIDE_PRIOR",
    "ScoringOptions",
    "add_clips",
    "add_problem_clips",
    "build_campaign",
    "build_scoring_campaign",
    "prior_scales",
    "refit_schedule",
]
