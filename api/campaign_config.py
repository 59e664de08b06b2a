"""A campaign's engine settings: what a new campaign stores (`engine_config`, JSON in its row) and
the engine's `CampaignConfig` built from it (`build_config`), with the readers of each stored key.

Stored with the campaign, so a later change of these defaults never changes how an old campaign
replays; a key absent in a campaign stored before it existed reads as what it always meant.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from engine import CampaignConfig, CriterionQuestions, KSetOffer, PriorScales, SideBias
from engine.adapters import JOD_NOISE_SD
from engine.reliability import KEEP_PRIOR
from engine.state import quality_prior
from engine.stopping import Targets

ACTIVE, PAUSED, CLOSED = "active", "paused", "closed"  # a campaign's states

# a criterion answer's noise sd per unit of the rater's on quality (JOD_NOISE_SD): 0.74 on the
# criteria's standardised scale, near the simulator's criterion raters (0.7, benchmarks/criteria)
CRITERION_NOISE_SCALE = 0.5
TIE_MARGIN = 0.5  # JOD: a third of a rater's noise sd, where real raters start saying "same"
EMOJI_SPACING = 1.0  # JOD between neighbouring emoji thresholds (5 levels: -1.5 .. 1.5)


def scale_levels(stored: dict[str, Any]) -> int | None:
    """The number of levels of the emoji scale a stored `engine_config` was built with (the
    scale its ratings were given on), or None."""
    thresholds = stored["emoji_thresholds"]
    return None if thresholds is None else len(thresholds) + 1


def engine_config(
    criteria: Sequence[str],
    pair_scope: str,
    ties: bool,
    emoji_levels: int | None,
    side_bias: dict[str, float] | None = None,
    both_threshold: float | None = None,
    feature_dim: int = 0,
    criterion_questions: Sequence[str] | None = None,
    criterion_gain: str = "quality",
) -> dict[str, Any]:
    """The engine settings a new campaign is created with, as JSON (stored with the campaign,
    so a later change of these defaults never changes how an old campaign replays);
    `side_bias` the side offsets' prior (`SideBias` keywords), None to ignore sides;
    `both_threshold` tau of "both good" / "both bad" answers, None for none (the key is left
    out then, so campaigns without it store what they always did); `feature_dim` the length
    of a clip's feature vector (engine.gating), 0 for no gate (left out then too);
    `criterion_questions` the criteria raters may also be asked about (engine.criteria),
    None or empty for none, and `criterion_gain` what their gain counts."""
    prior = quality_prior(len(criteria))
    side = {} if side_bias is None else {"side_bias": dict(side_bias)}
    if both_threshold is not None:
        side["both_threshold"] = float(both_threshold)
    if feature_dim:
        side["feature_dim"] = int(feature_dim)
    if criterion_questions:
        side["criterion_questions"] = {
            "criteria": list(criterion_questions),
            "gain": criterion_gain,
            "noise_scale": CRITERION_NOISE_SCALE,
        }
    return {
        "criteria": list(criteria),
        "pair_scope": pair_scope,
        "tie_margin": TIE_MARGIN if ties else 0.0,
        "emoji_thresholds": emoji_thresholds(emoji_levels),
        "noise_sd": JOD_NOISE_SD,
        "prior": {  # the engine's JOD-scale prior for these criteria, as the simulator's
            "weight_scale": prior.weight_scale,
            "context_scale": prior.context_scale,
            "residual_scale": prior.residual_scale,
        },
        "lapse_prior": list(KEEP_PRIOR),  # most answers are meant
        "learn_rater_noise": True,
        **side,
    }


def with_gold(stored: dict[str, Any], gold_rate: float) -> dict[str, Any]:
    """A stored `engine_config` with gold questions at `gold_rate` (engine.gold), under the
    campaign's gold seed or a fresh one (secret, so raters cannot foresee which task is gold);
    unchanged for rate 0 in a campaign that never had gold questions (it stores no gold
    keys)."""
    if gold_rate <= 0 and "gold_rate" not in stored:
        return stored
    seed = stored.get("gold_seed", secrets.randbelow(2**31))
    return {**stored, "gold_rate": float(gold_rate), "gold_seed": seed}


def emoji_thresholds(levels: int | None) -> list[float] | None:
    """The ordered-probit cuts of an emoji scale of `levels` levels, `EMOJI_SPACING` apart
    and centred on 0 (None: no scale)."""
    if levels is None:
        return None
    middle = (levels - 2) / 2
    return [EMOJI_SPACING * (k - middle) for k in range(levels - 1)]


def build_config(stored: dict[str, Any]) -> CampaignConfig:
    """The engine's `CampaignConfig` from a stored `engine_config`. Its prior is refitted in
    the background by the service (api/refits.py), never inline (`refit_prior_at` is empty):
    `prior_refit` only says how a refit moves the scales."""
    thresholds = stored["emoji_thresholds"]
    lapse = stored["lapse_prior"]
    refit = stored_prior_refit(stored)
    return CampaignConfig(
        criteria=tuple(stored["criteria"]),
        prior=PriorScales(**stored["prior"]),
        pair_scope=stored["pair_scope"],
        tie_margin=float(stored["tie_margin"]),
        emoji_thresholds=None if thresholds is None else tuple(thresholds),
        noise_sd=float(stored["noise_sd"]),
        lapse_prior=None if lapse is None else (float(lapse[0]), float(lapse[1])),
        learn_rater_noise=bool(stored["learn_rater_noise"]),
        targets=stored_targets(stored),
        side_bias=stored_side_bias(stored),
        criterion_questions=stored_criterion_questions(stored),
        gold_rate=float(stored.get("gold_rate", 0.0)),
        gold_seed=int(stored.get("gold_seed", 0)),
        # campaigns stored before the floor existed keep choosing as they did: none
        min_labels=stored_min_labels(stored),
        # campaigns stored before the choice existed are dense
        structure=stored.get("structure", "dense"),
        both_threshold=stored_both_threshold(stored),
        kset=None if stored.get("kset") is None else KSetOffer(**stored["kset"]),
        feature_dim=stored_feature_dim(stored),
        prior_refit=refit if refit != "off" else CampaignConfig.prior_refit,
    )


def stored_prior_refit(stored: dict[str, Any]) -> str:
    """How a stored `engine_config` refits its prior (api/refits.py): "split", "scales" or
    "off"; absent in campaigns created before the service refitted, which keep their stated
    prior ("off")."""
    return str(stored.get("prior_refit", "off"))


def stored_both_threshold(stored: dict[str, Any]) -> float | None:
    """tau of "both good" / "both bad" of a stored `engine_config` (absent: no such answers)."""
    tau = stored.get("both_threshold")
    return None if tau is None else float(tau)


def stored_feature_dim(stored: dict[str, Any]) -> int:
    """The feature vectors' length of a stored `engine_config` (absent: 0, no gate)."""
    return int(stored.get("feature_dim", 0))


def stored_criterion_questions(stored: dict[str, Any]) -> CriterionQuestions | None:
    """The criterion questions of a stored `engine_config` (absent: none are asked)."""
    questions = stored.get("criterion_questions")
    if questions is None:
        return None
    return CriterionQuestions(
        tuple(questions["criteria"]),
        **{k: v for k, v in questions.items() if k != "criteria"},
    )


def stored_side_bias(stored: dict[str, Any]) -> SideBias | None:
    """The side offsets' prior of a stored `engine_config` (absent: sides are ignored)."""
    side = stored.get("side_bias")
    return None if side is None else SideBias(**side)


def stored_min_labels(stored: dict[str, Any]) -> int:
    """The floor of labels per clip of a stored `engine_config` (engine.exposure); absent in
    campaigns created before it existed, which keep choosing as they did (0: none)."""
    return int(stored.get("min_labels", 0))


def stored_targets(stored: dict[str, Any]) -> Targets:
    """The stopping targets of a stored `engine_config`: its optional "targets" object
    (`Targets` keywords), absent in campaigns created before targets existed, which then
    replay as they always did (no target: never done)."""
    return Targets(**stored.get("targets", {}))


def target_values(targets: Targets) -> dict[str, float]:
    """`Targets` as the keywords that build it (the unset ones left out)."""
    values = {
        "kendall_tau": targets.kendall_tau,
        "confidence": targets.confidence,
        "interval_width": targets.interval_width,
    }
    return {key: value for key, value in values.items() if value is not None}
