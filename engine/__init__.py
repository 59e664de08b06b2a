"""ratingparty's engine: a Gaussian posterior over clip quality and criterion weights,
one interval-event update, batched expected information gain and pair selection.

Pure numerics (torch, numpy, scipy): no I/O, no web framework, no database.
"""

from engine.adapters import WinMatrixStrategy, make_strategy
from engine.campaign import DEFAULT_CRITERIA, Campaign, CampaignConfig, Judgment
from engine.clips import ClipRegistry
from engine.criteria import CriterionQuestions
from engine.device import default_device, default_dtype
from engine.empirical_bayes import (
    Hyperparameters,
    ScaleFit,
    fit_hyperparameters,
    fit_prior_scales,
    refit_schedule,
)
from engine.ep import Refinement, Sites, ep_refine
from engine.gold import GoldPair
from engine.history import Refit
from engine.likelihoods import LIKELIHOODS, Moments, Outcome, interval_moments
from engine.objectives import (
    OBJECTIVES,
    binary_information_gain,
    expected_information_gain,
    interval_information_gain,
    outcome_probabilities,
)
from engine.position import SideBias, SideOffsets
from engine.refit_result import RefitResult
from engine.selection import (
    RULES,
    NoEligibleTaskError,
    PairChoice,
    Pending,
    RatingChoice,
    SelectionOptions,
    select_pairs,
    select_rating,
)
from engine.state import Posterior, PriorScales, add_contexts, add_items, empty_posterior
from engine.stopping import CampaignDone, Progress, Targets, TargetStatus, tau_quantile
from engine.summaries import (
    ClipSummary,
    WeightSummary,
    predict_pair,
    probability_better,
    summarise_clips,
    summarise_weights,
)
from engine.targeted import (
    mixed_information_gain,
    weight_explained_variance,
    weight_information_gain,
)
from engine.task_choice import KSetOffer
from engine.tasks import Task, TaskBook
from engine.update import Events, level_events, pair_events, update, update_with_evidence

__all__ = [
    "DEFAULT_CRITERIA",
    "LIKELIHOODS",
    "OBJECTIVES",
    "RULES",
    "Campaign",
    "CampaignConfig",
    "CampaignDone",
    "ClipRegistry",
    "ClipSummary",
    "CriterionQuestions",
    "Events",
    "GoldPair",
    "Hyperparameters",
    "Judgment",
    "KSetOffer",
    "Moments",
    "NoEligibleTaskError",
    "Outcome",
    "PairChoice",
    "Pending",
    "Posterior",
    "PriorScales",
    "Progress",
    "RatingChoice",
    "Refinement",
    "Refit",
    "RefitResult",
    "ScaleFit",
    "SelectionOptions",
    "SideBias",
    "SideOffsets",
    "Sites",
    "TargetStatus",
    "Targets",
    "Task",
    "TaskBook",
    "WeightSummary",
    "WinMatrixStrategy",
    "add_contexts",
    "add_items",
    "binary_information_gain",
    "default_device",
    "default_dtype",
    "empty_posterior",
    "ep_refine",
    "expected_information_gain",
    "fit_hyperparameters",
    "fit_prior_scales",
    "interval_information_gain",
    "interval_moments",
    "level_events",
    "make_strategy",
    "mixed_information_gain",
    "outcome_probabilities",
    "pair_events",
    "predict_pair",
    "probability_better",
    "refit_schedule",
    "select_pairs",
    "select_rating",
    "summarise_clips",
    "summarise_weights",
    "tau_quantile",
    "update",
    "update_with_evidence",
    "weight_explained_variance",
    "weight_information_gain",
]
