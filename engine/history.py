"""A campaign's history: clip batches, label batches, prior refits and EP refinements in the
order they happened. It is the one place labels are kept (`log` reads them from here) and what
`Campaign.replay` re-runs.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import Tensor

from engine.exposure import ClipCounts
from engine.state import PriorScales

if TYPE_CHECKING:
    from engine.campaign import Judgment


@dataclass(frozen=True)
class Refit:
    """One fit_prior() call, as the history replays it (with the values it found)."""

    scales: PriorScales
    tie_margin: float
    emoji_thresholds: tuple[float, ...] | None
    noise_prior_spread: float
    # the raters' side-offset prior sd it found (None: no side block, or not refitted)
    side_rater_sd: float | None = None
    # the keep prior Beta(alpha, beta) it found (None: no lapse model, or not refitted)
    keep_prior: tuple[float, float] | None = None


@dataclass(frozen=True)
class Refine:
    """One refine() call, as the history replays it."""

    max_sweeps: int
    damping: float


@dataclass(frozen=True)
class ClipsAdded:
    """One add_clips call, as the history replays it."""

    raw_scores: Tensor
    contexts: tuple[Hashable | None, ...]
    groups: tuple[Hashable | None, ...]
    features: Tensor | None = None  # (B, D) where the campaign has a feature gate


Entry = ClipsAdded | Refine | Refit | tuple["Judgment", ...]


class History:
    """The campaign's entries in order, how many labels they hold, and how many of them each
    clip took (gold answers aside: they teach no clip, engine.gold)."""

    def __init__(self) -> None:
        self._entries: list[Entry] = []
        self._label_count = 0
        self.clip_counts = ClipCounts()

    @classmethod
    def of(cls, entries: Sequence[Entry], clip_counts: ClipCounts) -> History:
        """A history of `entries`, whose labels per clip `clip_counts` counted already (a
        refitted copy's, for the same labels: `Campaign.adopt_refit`)."""
        history = cls()
        history._entries = list(entries)
        history._label_count = sum(len(e) for e in history._entries if isinstance(e, tuple))
        history.clip_counts = clip_counts
        return history

    def record(self, entry: ClipsAdded | Refine | Refit) -> None:
        self._entries.append(entry)

    def record_labels(self, judgments: Sequence[Judgment]) -> None:
        """A batch of labels as applied (each with the noise and keep it was applied with)."""
        if judgments:
            self._entries.append(tuple(judgments))
            self._label_count += len(judgments)
            self.clip_counts.add(
                item for j in judgments if j.gold is None for item in j.question.items
            )

    @property
    def label_count(self) -> int:
        return self._label_count

    @property
    def log(self) -> list[Judgment]:
        """Every label so far, in order."""
        return [j for entry in self._entries if isinstance(entry, tuple) for j in entry]

    @property
    def refits(self) -> tuple[tuple[int, Refit], ...]:
        """Each refit with the number of labels recorded before it, in order."""
        out, labels = [], 0
        for entry in self._entries:
            if isinstance(entry, tuple):
                labels += len(entry)
            elif isinstance(entry, Refit):
                out.append((labels, entry))
        return tuple(out)

    @property
    def latest_refit(self) -> int | None:
        """The position of the latest refit among the entries (None: none yet)."""
        return next(
            (
                k
                for k in range(len(self._entries) - 1, -1, -1)
                if isinstance(self._entries[k], Refit)
            ),
            None,
        )

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries)

    def __len__(self) -> int:
        """Entries so far: every change of the posterior adds one."""
        return len(self._entries)


__all__ = ["ClipsAdded", "Entry", "History", "Refine", "Refit"]
