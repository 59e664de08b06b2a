"""Empirical Bayes: the prior scales that make the labels most probable.

`PriorScales` (weight, context-offset and residual sd, MATH.md §1) are chosen by maximising the
approximate log marginal likelihood of the labels, `log p(y | scales)`, taken prequentially
under ADF (`engine.update.update_with_evidence`: each label's predictive probability given the
labels before it). Three positive numbers, optimised over their logarithms by L-BFGS-B
(finite-difference gradient) from the current scales. A scale the data do not support shrinks
toward 0 (a useless reward model gets weight ~0 and costs nothing); a scale with no labels to
inform it stays where it starts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import minimize

from engine.state import Posterior, PriorScales
from engine.update import Events, update_with_evidence

SCALE_BOUNDS = (1e-3, 1e2)  # latent units; beyond these a scale is 0 or flat for any campaign
FINITE_STEP = 1e-4  # log-scale step of the finite-difference gradient (the evidence is smooth)


@dataclass(frozen=True)
class ScaleFit:
    """The fitted scales, the log evidence there and at the start, and evaluations used."""

    scales: PriorScales
    log_evidence: float
    start_log_evidence: float
    evaluations: int


def fit_prior_scales(
    build_prior: Callable[[PriorScales], Posterior],
    events: Events,
    start: PriorScales,
    *,
    fit_weights: bool = True,
    max_evaluations: int = 200,
) -> ScaleFit:
    """`argmax_scales log p(events | scales)` (prequential ADF evidence), from `start`.

    Args:
        build_prior: the prior over the campaign's clips for given scales.
        events: the labels, in the order they arrived.
        start: the scales to start from (and `weight_mean`, kept as is).
        fit_weights: also fit weight and context scales (False when there are no criteria).
        max_evaluations: the optimiser's budget of evidence evaluations.

    Raises:
        ValueError: no events to fit to.
    """
    if len(events) == 0:
        raise ValueError("empirical Bayes needs labels")
    names = (
        ("residual_scale", "weight_scale", "context_scale") if fit_weights else ("residual_scale",)
    )
    low, high = (math.log(b) for b in SCALE_BOUNDS)

    def scales_of(log_scales: np.ndarray) -> PriorScales:
        values = np.exp(np.clip(log_scales, low, high))
        return replace(start, **{n: float(v) for n, v in zip(names, values, strict=True)})

    def negative_evidence(log_scales: np.ndarray) -> float:
        return -update_with_evidence(build_prior(scales_of(log_scales)), events).log_evidence

    x0 = np.log(np.clip([getattr(start, n) for n in names], *SCALE_BOUNDS))
    start_value = -negative_evidence(x0)
    result = minimize(
        negative_evidence,
        x0,
        method="L-BFGS-B",
        bounds=[(low, high)] * len(names),
        options={"maxfun": max_evaluations, "eps": FINITE_STEP, "ftol": 1e-9},
    )
    best = result.x if -result.fun >= start_value else x0
    return ScaleFit(scales_of(best), max(-result.fun, start_value), start_value, result.nfev)


__all__ = ["ScaleFit", "fit_prior_scales"]
