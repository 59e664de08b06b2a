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

`SCALE_REFITS` names how the search moves the scales: "scales" frees all three; "split" keeps
the prior's total quality variance `K (sigma_w^2 + sigma_c^2) + tau^2` where it starts and
learns only the share of it the criteria get (docs/MATH.md §1, "Learning the split"). Labels
chosen by information gain are close pairs, whose evidence is nearly flat in the total scale
(docs/MATH.md §4), but not in the split: whether clips with similar scores come out alike is
what they do measure.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Protocol

import numpy as np
from scipy.optimize import minimize

from engine.state import Posterior, PriorScales
from engine.update import Events, update_with_evidence

SCALE_BOUNDS = (1e-3, 1e2)  # latent units; beyond these a scale is 0 or flat for any campaign
FINITE_STEP = 1e-4  # log-scale step of the finite-difference gradient (the evidence is smooth)
# the criteria's share of the quality variance under "split": 1e-4 is a weight sd of 1 % of the
# total's (a useless reward model costs nothing), 0.99 leaves every clip a residual of 10 %
SHARE_BOUNDS = (1e-4, 0.99)
CONTEXT_TO_WEIGHT = 0.5  # context-offset sd per weight sd when the start has no criteria part


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


class ScaleCoordinates(Protocol):
    """How the search moves the prior scales: unconstrained coordinates and their bounds from a
    start, and the scales at a point."""

    def start(self, scales: PriorScales, fit_weights: bool) -> list[float]:
        """The coordinates of `scales` (clipped into the bounds)."""
        ...

    def bounds(self, fit_weights: bool) -> list[tuple[float, float]]:
        """One (low, high) per coordinate."""
        ...

    def scales(self, start: PriorScales, x: np.ndarray, fit_weights: bool) -> PriorScales:
        """The scales at coordinates `x` (`start` gives what the coordinates leave fixed)."""
        ...


class FreeScales:
    """Each scale on its own: the logs of tau, sigma_w and sigma_c (tau alone without
    criteria), each in `SCALE_BOUNDS`."""

    @staticmethod
    def _names(fit_weights: bool) -> tuple[str, ...]:
        return (
            ("residual_scale", "weight_scale", "context_scale")
            if fit_weights
            else ("residual_scale",)
        )

    def start(self, scales: PriorScales, fit_weights: bool) -> list[float]:
        values = [getattr(scales, n) for n in self._names(fit_weights)]
        return [float(v) for v in np.log(np.clip(values, *SCALE_BOUNDS))]

    def bounds(self, fit_weights: bool) -> list[tuple[float, float]]:
        low, high = (math.log(b) for b in SCALE_BOUNDS)
        return [(low, high)] * len(self._names(fit_weights))

    def scales(self, start: PriorScales, x: np.ndarray, fit_weights: bool) -> PriorScales:
        low, high = (math.log(b) for b in SCALE_BOUNDS)
        values = np.exp(np.clip(x, low, high))
        names = self._names(fit_weights)
        return replace(start, **{n: float(v) for n, v in zip(names, values, strict=True)})


class SplitScales:
    """The total kept, the split learned: one coordinate, the logit of the criteria's share
    `rho = K (sigma_w^2 + sigma_c^2) / V` of the start's total quality variance
    `V = K (sigma_w^2 + sigma_c^2) + tau^2`, with sigma_c / sigma_w as at the start
    (`CONTEXT_TO_WEIGHT` when the start has no criteria part), rho in `SHARE_BOUNDS`
    (docs/MATH.md §1, "Learning the split"). Without criteria there is nothing to split and
    no coordinate."""

    def __init__(self, n_criteria: int) -> None:
        """Args:
        n_criteria: K, the criteria each clip's quality sums over."""
        self.n_criteria = n_criteria

    def _parts(self, scales: PriorScales) -> tuple[float, float]:
        """(criteria part K (sigma_w^2 + sigma_c^2), total V) of `scales`."""
        part = self.n_criteria * (scales.weight_scale**2 + scales.context_scale**2)
        return part, part + scales.residual_scale**2

    def start(self, scales: PriorScales, fit_weights: bool) -> list[float]:
        if not fit_weights:
            return []
        part, total = self._parts(scales)
        share = min(max(part / total, SHARE_BOUNDS[0]), SHARE_BOUNDS[1])
        return [math.log(share / (1 - share))]

    def bounds(self, fit_weights: bool) -> list[tuple[float, float]]:
        low, high = (math.log(b / (1 - b)) for b in SHARE_BOUNDS)
        return [(low, high)] if fit_weights else []

    def scales(self, start: PriorScales, x: np.ndarray, fit_weights: bool) -> PriorScales:
        if not fit_weights:
            return start
        low, high = self.bounds(fit_weights)[0]
        share = 1 / (1 + math.exp(-float(np.clip(x[0], low, high))))
        _, total = self._parts(start)
        ratio = (
            start.context_scale / start.weight_scale
            if start.weight_scale > 0
            else CONTEXT_TO_WEIGHT
        )
        # MATH.md eq. (1.2): K (w^2 + (ratio w)^2) = share V, tau^2 = (1 - share) V
        weight = math.sqrt(share * total / (self.n_criteria * (1 + ratio**2)))
        return replace(
            start,
            weight_scale=weight,
            context_scale=ratio * weight,
            residual_scale=math.sqrt((1 - share) * total),
        )


def scale_coordinates(name: str, n_criteria: int) -> ScaleCoordinates:
    """The registered scale parametrisation `name` (`SCALE_REFITS`) for K = `n_criteria`.

    Raises:
        KeyError: an unknown name.
    """
    if name not in SCALE_REFITS:
        raise KeyError(f"unknown prior refit {name!r}; known: {sorted(SCALE_REFITS)}")
    return SCALE_REFITS[name](n_criteria)


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
    coordinates: ScaleCoordinates | None = None,
) -> ScaleFit:
    """`argmax log p(labels | hyper)` (prequential ADF evidence) over the prior scales and,
    when asked, the tie margin and the emoji thresholds, from `start`.

    The search runs over unconstrained coordinates: the scales' as `coordinates` says (the
    logs of each, or the logit of the criteria's share at a fixed total), the log of the tie
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
        coordinates: how the scales move (`SCALE_REFITS`); default each on its own
            (`FreeScales`).

    Raises:
        ValueError: no events to fit to, or a part to fit that the start does not have.
    """
    coordinates = coordinates or FreeScales()
    n_scales = len(coordinates.bounds(fit_weights))
    if fit_tie and not start.tie_margin > 0:
        raise ValueError("fitting the tie margin needs a campaign with ties (tie_margin > 0)")
    thresholds = start.emoji_thresholds if fit_thresholds else None
    if fit_thresholds and not thresholds:
        raise ValueError("fitting emoji thresholds needs a campaign with an emoji scale")
    low, high = (math.log(b) for b in SCALE_BOUNDS)

    def unpack(x: np.ndarray) -> Hyperparameters:
        x = np.asarray(x, dtype=float)
        hyper = replace(start, scales=coordinates.scales(start.scales, x[:n_scales], fit_weights))
        at = n_scales
        if fit_tie:
            hyper = replace(hyper, tie_margin=float(np.exp(np.clip(x[at], low, high))))
            at += 1
        if thresholds is not None:
            gaps = np.exp(np.clip(x[at + 1 :], low, high))
            cuts = x[at] + np.concatenate(([0.0], np.cumsum(gaps)))
            hyper = replace(hyper, emoji_thresholds=tuple(float(c) for c in cuts))
        return hyper

    x0 = coordinates.start(start.scales, fit_weights)
    bounds = coordinates.bounds(fit_weights)
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
    if not x0:  # nothing to move (a split without criteria): the start is the fit
        return ScaleFit(start, start_value, start_value, 1)
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


def refit_schedule(n_items: int, n_refits: int = 8) -> tuple[int, ...]:
    """Label counts at which a campaign of `n_items` clips refits its prior: `2n, 4n, 8n, ...`
    (`n_refits` of them).

    From two labels a clip on, at doubling counts, so a run of N labels refits about
    log2(N / 2n) times and the refits' total cost stays a small multiple of the last one.
    Earlier refits hurt: with under two labels a clip the evidence is flat, and ADF's evidence
    flatters wide priors, so the fitted scales run far too wide.
    """
    return tuple(2 * n_items * 2**k for k in range(n_refits))


SCALE_REFITS: dict[str, Callable[[int], ScaleCoordinates]] = {
    "scales": lambda n_criteria: FreeScales(),
    "split": SplitScales,
}


__all__ = [
    "SCALE_REFITS",
    "FreeScales",
    "Hyperparameters",
    "ScaleCoordinates",
    "ScaleFit",
    "SplitScales",
    "fit_hyperparameters",
    "fit_prior_scales",
    "refit_schedule",
    "scale_coordinates",
]
