"""Empirical Bayes: the prior scales, tie margin and emoji thresholds that make the labels most
probable.

`PriorScales` (weight, context-offset and residual sd, MATH.md §1), and where the campaign has
them the tie margin t and the emoji thresholds b (MATH.md §2), are chosen by maximising the
approximate log marginal likelihood of the labels, `log p(y | scales)`, taken prequentially
under ADF (`engine.update.update_with_evidence`: each label's predictive probability given the
labels before it), by L-BFGS-B (finite-difference gradient) from the current values. With the
rater noise fixed (it sets the latent unit), t and b are identified: they move the share of
ties and of each emoji level the model predicts. A scale the data do not support shrinks
toward 0 (a useless reward model gets weight ~0 and costs nothing); a scale with no labels to
inform it stays where it starts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import pairwise

import numpy as np
from scipy.optimize import minimize

from engine.state import Posterior, PriorScales
from engine.update import Events, update_with_evidence

SCALE_BOUNDS = (1e-3, 1e2)  # latent units; beyond these a scale is 0 or flat for any campaign
FINITE_STEP = 1e-4  # log-scale step of the finite-difference gradient (the evidence is smooth)


@dataclass(frozen=True)
class Hyperparameters:
    """What empirical Bayes may learn besides the labels' own posterior: the prior scales, the
    tie margin (0: no ties) and the emoji thresholds (None: no emoji scale)."""

    scales: PriorScales
    tie_margin: float = 0.0
    emoji_thresholds: tuple[float, ...] | None = None


@dataclass(frozen=True)
class ScaleFit:
    """The fitted hyperparameters, the log evidence there and at the start, evaluations used."""

    hyper: Hyperparameters
    log_evidence: float
    start_log_evidence: float
    evaluations: int

    @property
    def scales(self) -> PriorScales:
        return self.hyper.scales


def fit_hyperparameters(
    build_prior: Callable[[PriorScales], Posterior] | None,
    build_events: Callable[[Hyperparameters], Events],
    start: Hyperparameters,
    *,
    fit_weights: bool = True,
    fit_tie: bool = False,
    fit_thresholds: bool = False,
    max_evaluations: int = 200,
    log_evidence: Callable[[PriorScales, Events], float] | None = None,
) -> ScaleFit:
    """`argmax log p(labels | hyper)` (prequential ADF evidence) over the prior scales and,
    when asked, the tie margin and the emoji thresholds, from `start`.

    The search runs over unconstrained coordinates: the logs of the scales and of the tie
    margin, and for thresholds b_1 < ... < b_{L-1} the first one and the logs of the gaps, so
    every point is a valid model.

    Args:
        build_prior: the prior over the campaign's clips for given scales (dense); None when
            `log_evidence` is given.
        build_events: the labels, in the order they arrived, as interval events under the
            given tie margin and thresholds.
        start: where to start (and `weight_mean`, kept as is).
        fit_weights: also fit weight and context scales (False when there are no criteria).
        fit_tie: also fit the tie margin (needs `start.tie_margin > 0`).
        fit_thresholds: also fit the emoji thresholds (needs `start.emoji_thresholds`).
        max_evaluations: the optimiser's budget of evidence evaluations.
        log_evidence: `sum_b log Z_b` of the events under ADF from the prior of given scales,
            for a posterior kept in another form (engine.forms); default: `build_prior` and
            `update_with_evidence`.

    Raises:
        ValueError: no events to fit to, or a part to fit that the start does not have.
    """
    names = (
        ("residual_scale", "weight_scale", "context_scale") if fit_weights else ("residual_scale",)
    )
    if fit_tie and not start.tie_margin > 0:
        raise ValueError("fitting the tie margin needs a campaign with ties (tie_margin > 0)")
    thresholds = start.emoji_thresholds if fit_thresholds else None
    if fit_thresholds and not thresholds:
        raise ValueError("fitting emoji thresholds needs a campaign with an emoji scale")
    low, high = (math.log(b) for b in SCALE_BOUNDS)

    def unpack(x: np.ndarray) -> Hyperparameters:
        x = np.asarray(x, dtype=float)
        scales = np.exp(np.clip(x[: len(names)], low, high))
        hyper = replace(
            start,
            scales=replace(
                start.scales, **{n: float(v) for n, v in zip(names, scales, strict=True)}
            ),
        )
        at = len(names)
        if fit_tie:
            hyper = replace(hyper, tie_margin=float(np.exp(np.clip(x[at], low, high))))
            at += 1
        if thresholds is not None:
            gaps = np.exp(np.clip(x[at + 1 :], low, high))
            cuts = x[at] + np.concatenate(([0.0], np.cumsum(gaps)))
            hyper = replace(hyper, emoji_thresholds=tuple(float(c) for c in cuts))
        return hyper

    x0 = list(np.log(np.clip([getattr(start.scales, n) for n in names], *SCALE_BOUNDS)))
    bounds = [(low, high)] * len(names)
    if fit_tie:
        x0.append(math.log(min(max(start.tie_margin, SCALE_BOUNDS[0]), SCALE_BOUNDS[1])))
        bounds.append((low, high))
    if thresholds is not None:
        x0.append(thresholds[0])
        x0 += [math.log(max(b - a, SCALE_BOUNDS[0])) for a, b in pairwise(thresholds)]
        bounds += [(-SCALE_BOUNDS[1], SCALE_BOUNDS[1])] + [(low, high)] * (len(thresholds) - 1)

    if log_evidence is None:
        if build_prior is None:
            raise ValueError("give build_prior or log_evidence")
        prior_of = build_prior

        def log_evidence(scales: PriorScales, events: Events) -> float:
            return update_with_evidence(prior_of(scales), events).log_evidence

    evidence = log_evidence

    def negative_evidence(x: np.ndarray) -> float:
        hyper = unpack(x)
        return -evidence(hyper.scales, build_events(hyper))

    if len(build_events(start)) == 0:
        raise ValueError("empirical Bayes needs labels")
    start_value = -negative_evidence(np.asarray(x0))
    result = minimize(
        negative_evidence,
        np.asarray(x0),
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxfun": max_evaluations, "eps": FINITE_STEP, "ftol": 1e-9},
    )
    better = -result.fun >= start_value
    return ScaleFit(
        unpack(result.x) if better else start,
        max(-result.fun, start_value),
        start_value,
        result.nfev,
    )


def fit_prior_scales(
    build_prior: Callable[[PriorScales], Posterior],
    events: Events,
    start: PriorScales,
    *,
    fit_weights: bool = True,
    max_evaluations: int = 200,
) -> ScaleFit:
    """`argmax_scales log p(events | scales)` (prequential ADF evidence), from `start`, with
    the events fixed (tie margin and thresholds as given): `fit_hyperparameters` on the scales.

    Raises:
        ValueError: no events to fit to.
    """
    return fit_hyperparameters(
        build_prior,
        lambda _: events,
        Hyperparameters(start),
        fit_weights=fit_weights,
        max_evaluations=max_evaluations,
    )


__all__ = ["Hyperparameters", "ScaleFit", "fit_hyperparameters", "fit_prior_scales"]
