"""A campaign's stopping rule: targets on how sure its leaderboard is, and how far it is from them.

A campaign may ask for the posterior's expected Kendall tau (within prompts when pairs stay in
prompts; engine.summaries.expected_kendall_tau) to reach a value, or, with a confidence c, for
`P(tau >= t) >= c` under the posterior (tau between a posterior draw and the posterior mean
order, estimated from TAU_SAMPLES seeded draws), or for the widest central 90 % interval of
any clip's quality to shrink below a width, or for several of these.

An expected tau at the target leaves the realised tau below it about half the time; the
quantile form is the one whose promise is "met in at least c of the worlds the posterior
believes in". While every target set
is met, the campaign hands out no task and says why (`CampaignDone`); raising a target or
adding clips (whose wide priors lower the expected tau and widen the widest interval) opens it
again, because the check reads the posterior as it is at each request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from engine.selection import NoEligibleTaskError

INTERVAL_LEVEL = 0.9  # the width target reads the leaderboard's central 90 % interval
# draws behind a quantile target: the share P(tau >= t) is then known to about +-0.007 at 0.9
TAU_SAMPLES = 2000
# one fixed seed, so the same posterior always gives the same progress (and replay the same)
TAU_SEED = 0


@dataclass(frozen=True)
class Targets:
    """What "done" means; None leaves a target unset.

    Attributes:
        kendall_tau: the Kendall tau, in (0, 1], to reach: in expectation when `confidence`
            is None, else with that posterior probability.
        confidence: c in (0, 1): the target is met when `P(tau >= kendall_tau) >= c` under
            the posterior (None: the expected tau is compared instead).
        interval_width: the largest central 90 % interval width of a clip's quality
            (latent units, as the leaderboard reports it) to get below, > 0.
    """

    kendall_tau: float | None = None
    interval_width: float | None = None
    confidence: float | None = None

    def __post_init__(self) -> None:
        if self.kendall_tau is not None and not 0 < self.kendall_tau <= 1:
            raise ValueError(f"a Kendall tau target must be in (0, 1], got {self.kendall_tau}")
        if self.interval_width is not None and not (
            self.interval_width > 0 and math.isfinite(self.interval_width)
        ):
            raise ValueError(f"an interval width target must be > 0, got {self.interval_width}")
        if self.confidence is not None:
            if not 0 < self.confidence < 1:
                raise ValueError(f"a confidence must be in (0, 1), got {self.confidence}")
            if self.kendall_tau is None:
                raise ValueError("a confidence needs a Kendall tau target to qualify")

    @property
    def any(self) -> bool:
        return self.kendall_tau is not None or self.interval_width is not None


@dataclass(frozen=True)
class TargetStatus:
    """One target: its name, the target, the current value, the distance still to go (0 when
    met) and whether it is met."""

    name: str
    target: float
    value: float
    distance: float
    met: bool


@dataclass(frozen=True)
class Progress:
    """Where the campaign stands against its targets (none set: never done).

    Attributes:
        targets: one status per target set.
        labels: labels applied so far.
    """

    targets: tuple[TargetStatus, ...]
    labels: int

    @property
    def done(self) -> bool:
        """Every target set is met (False when none is set)."""
        return bool(self.targets) and all(t.met for t in self.targets)

    @property
    def reason(self) -> str:
        """One sentence for an operator or a rater's client."""
        if not self.targets:
            return "no target set: the campaign runs until stopped"
        parts = [
            f"{t.name} {t.value:.3f} (target {t.target:g}"
            + (", met)" if t.met else f", {t.distance:.3f} to go)")
            for t in self.targets
        ]
        head = "done after" if self.done else "not done after"
        return f"{head} {self.labels} labels: " + "; ".join(parts)


def tau_quantile(draws: Tensor, confidence: float) -> float:
    """The largest v with `share(draws >= v) >= confidence`: the tau the posterior reaches
    with probability `confidence`, so that `tau_quantile(draws, c) >= t` exactly when at
    least a share c of the draws reach t.

    Args:
        draws: (S,) sampled Kendall taus (engine.summaries.sampled_kendall_tau).
        confidence: c in (0, 1).

    Returns:
        The value; NaN when the draws are NaN (no pair in scope).
    """
    ordered, _ = torch.sort(draws)
    n_samples = ordered.numel()
    # the ceil(c S) largest draws are >= this one, and no larger value keeps that many; the
    # rounding keeps c S = 1800.0000000000002 (0.9 x 2000 in floats) at 1800
    kept = math.ceil(round(confidence * n_samples, 9))
    return float(ordered[n_samples - kept])


def progress(
    targets: Targets, tau: float | None, widest_interval: float | None, labels: int
) -> Progress:
    """The status of each target set, from the campaign's current read-outs.

    Args:
        targets: what the campaign asks for.
        tau: the tau read-out the target compares: E[Kendall tau] of the posterior, or with
            `targets.confidence` its `tau_quantile` (None when no tau target is set; NaN when
            no pair is in scope, which never meets a target).
        widest_interval: the largest central 90 % interval width over clips (None likewise).
        labels: labels so far.
    """
    statuses = []
    if targets.kendall_tau is not None and tau is not None:
        met = tau >= targets.kendall_tau
        distance = 0.0 if met else targets.kendall_tau - tau
        if math.isnan(tau):
            met, distance = False, math.inf
        name = "expected_kendall_tau" if targets.confidence is None else "kendall_tau_quantile"
        statuses.append(TargetStatus(name, targets.kendall_tau, tau, distance, met))
    if targets.interval_width is not None and widest_interval is not None:
        met = widest_interval <= targets.interval_width
        distance = 0.0 if met else widest_interval - targets.interval_width
        statuses.append(
            TargetStatus("interval_width", targets.interval_width, widest_interval, distance, met)
        )
    return Progress(tuple(statuses), labels)


class CampaignDone(NoEligibleTaskError):
    """Every target the campaign set is met: no task is handed out until a target is raised
    or clips are added. `progress` says which values met which targets."""

    def __init__(self, status: Progress) -> None:
        super().__init__(status.reason)
        self.progress = status


__all__ = [
    "INTERVAL_LEVEL",
    "TAU_SAMPLES",
    "TAU_SEED",
    "CampaignDone",
    "Progress",
    "TargetStatus",
    "Targets",
    "progress",
    "tau_quantile",
]
