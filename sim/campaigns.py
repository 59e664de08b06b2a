"""The engine campaigns the simulator drives: one configuration, with or without the reward model.

Fixed prior scales on the JOD scale, the same in every world (issue 5 learns them from the
labels): a clip's quality has prior sd 1.5 JOD around what the reward model predicts (a typical
spread of a JOD study); each standardised criterion's weight has prior sd 1 and each context's
offset sd 0.5.

The scale is a trade-off, measured on the benchmark's n = 100 worlds (10 worlds each,
benchmarks/results/label_efficiency.md): a wider prior (sd 3) made information gain without a
reward model explore more (Kendall tau 0.9 after 3,081 instead of 3,966 labels), but the
posterior mean then over-spreads (after 200 random labels of a world with quality sd 1.63:
3.26 JOD by ADF, 3.26 by EP, which is exact to 1e-4 on small problems, 2.22 for the exact MAP;
benchmarks/results/posterior_spread.md), so the engine's RMSE and calibration got much
worse. That is the prior, not the ADF approximation: the scales have to be learned from the
labels (empirical Bayes, issue 5).
"""

from __future__ import annotations

from engine import Campaign, CampaignConfig, PriorScales, SelectionOptions
from engine.adapters import JOD_NOISE_SD
from sim.worlds import Problem

PRIOR = PriorScales(weight_scale=1.0, context_scale=0.5, residual_scale=1.5)
# Empirical-Bayes refits from 2 labels per clip on, at doubling label counts, so a run of N
# labels refits about log2(N / 2n) times and the refits' total cost stays a small multiple of
# the last one. Earlier refits hurt: with under two labels a clip the evidence is flat, and
# ADF's evidence flatters wide priors, so the fitted scales run far too wide.


def refit_schedule(n_items: int) -> tuple[int, ...]:
    """Label counts at which the simulator's EB campaigns refit their prior: 2n, 4n, 8n, ..."""
    return tuple(2 * n_items * 2**k for k in range(8))


# Rater reliability: keep ~ Beta(9, 1) (a careful rater answers by the model ~90 % of the time)
# and 5 % of raters may be pure random clickers (engine.reliability).
LAPSE_PRIOR = (9.0, 1.0)


def build_campaign(
    problem: Problem,
    *,
    reward_model: bool,
    selection: SelectionOptions | None = None,
    lapse_prior: tuple[float, float] | None = None,
    learn_rater_noise: bool = False,
    refit_prior_at: tuple[int, ...] = (),
    structure: str = "dense",
    prior: PriorScales = PRIOR,
    noise_sd: float = JOD_NOISE_SD,
) -> Campaign:
    """A CPU float64 campaign over the problem's clips (scores only when `reward_model`;
    rater lapses modelled with a Beta `lapse_prior` on the keep probability when given; each
    rater's noise learned when `learn_rater_noise`; the prior refitted by empirical Bayes
    once the label count reaches each of `refit_prior_at`; the posterior kept as
    `structure` says, engine.forms; `prior` and `noise_sd` what it assumes, the simulator's
    defaults unless a benchmark varies them)."""
    use_scores = reward_model and problem.scores is not None
    config = CampaignConfig(
        criteria=problem.criteria if use_scores else (),
        prior=prior,
        pair_scope="group" if problem.pair_scope == "group" else "any",
        tie_margin=problem.tie_margin,
        noise_sd=noise_sd,
        selection=selection or SelectionOptions(),
        lapse_prior=lapse_prior,
        learn_rater_noise=learn_rater_noise,
        refit_prior_at=refit_prior_at,
        structure=structure,  # type: ignore[arg-type]
    )
    campaign = Campaign(config, device="cpu")
    campaign.add_clips(
        problem.scores if use_scores else None,
        count=problem.n_items,
        contexts=problem.contexts.tolist(),
        groups=problem.groups.tolist(),
    )
    return campaign


__all__ = ["LAPSE_PRIOR", "PRIOR", "build_campaign", "refit_schedule"]
