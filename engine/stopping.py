"""A campaign's stopping rule: targets on how sure its leaderboard is, and how far it is from them.

A campaign may ask for the posterior's expected Kendall tau (within prompts when pairs stay in
prompts; engine.summaries.expected_kendall_tau) to reach a value, or for the widest central
90 % interval of any clip's quality to shrink below a width, or both. While every target set
is met, the campaign hands out no task and says why (`CampaignDone`); raising a target or
adding clips (whose wide priors lower the expected tau and widen the widest interval) opens it
again, because the check reads the posterior as it is at each request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.selection import NoEligibleTaskError

INTERVAL_LEVEL = 0.9  # the width target reads the leaderboard's central 90 % interval


@dataclass(frozen=True)
class Targets:
    """What "done" means; None leaves a target unset.

    Attributes:
        kendall_tau: the expected Kendall tau, in (0, 1], to reach.
        interval_width: the largest central 90 % interval width of a clip's quality
            (latent units, as the leaderboard reports it) to get below, > 0.
    """

    kendall_tau: float | None = None
    interval_width: float | None = None

    def __post_init__(self) -> None:
        if self.kendall_tau is not None and not 0 < self.kendall_tau <= 1:
            raise ValueError(f"a Kendall tau target must be in (0, 1], got {self.kendall_tau}")
        if self.interval_width is not None and not (
            self.interval_width > 0 and math.isfinite(self.interval_width)
        ):
            raise ValueError(f"an interval width target must be > 0, got {self.interval_width}")

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


def progress(
    targets: Targets, expected_tau: float | None, widest_interval: float | None, labels: int
) -> Progress:
    """The status of each target set, from the campaign's current read-outs.

    Args:
        targets: what the campaign asks for.
        expected_tau: E[Kendall tau] of the posterior (None when no tau target is set; NaN
            when no pair is in scope, which never meets a target).
        widest_interval: the largest central 90 % interval width over clips (None likewise).
        labels: labels so far.
    """
    statuses = []
    if targets.kendall_tau is not None and expected_tau is not None:
        met = expected_tau >= targets.kendall_tau
        distance = 0.0 if met else targets.kendall_tau - expected_tau
        if math.isnan(expected_tau):
            met, distance = False, math.inf
        statuses.append(
            TargetStatus("expected_kendall_tau", targets.kendall_tau, expected_tau, distance, met)
        )
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


__all__ = ["INTERVAL_LEVEL", "CampaignDone", "Progress", "TargetStatus", "Targets", "progress"]
