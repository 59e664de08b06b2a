"""Exposure: every clip gets a minimum number of labels (docs/MATH.md §4, "Exposure").

Information gain passes over a clip whose pairs look uninformative, and a clip added late
competes with clips whose posteriors are already sharp. `CampaignConfig(min_labels=m)` sets a
floor: a clip the rater may be shown (not excluded: withheld, retired or filtered) whose count
of labels, answered plus pending (not gold), is below m is *starved*, and while some clip is,
every pair chosen holds a starved clip; which pair is still the objective's choice. The rule is
a mask on the candidates, `focus[i] | focus[j]`, that every posterior form's selection applies
in its own scope (same prompt in blocks; all clips or neighbours in any scope).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Exposure:
    """The starved clips of one request.

    Attributes:
        focus: (n,) bool, the starved clips the rater may be shown; every pair chosen holds one.
        deficit: labels still owed to them, `sum_i (m - count_i)`: a batch holds at most this
            many pairs while the rule is on.
    """

    focus: Tensor
    deficit: int


class ClipCounts:
    """How many labels each clip has (answered, not gold): one count per clip, grown as clips
    are added, one scatter-add per label batch."""

    def __init__(self) -> None:
        self._counts = torch.zeros(0, dtype=torch.long)

    def add(self, items: Iterable[int]) -> None:
        """Count one label for each clip listed (a clip listed twice counts twice)."""
        index = torch.tensor(list(items), dtype=torch.long)
        if not index.numel():
            return
        size = int(index.max()) + 1
        if size > self._counts.numel():
            grown = torch.zeros(size, dtype=torch.long)
            grown[: self._counts.numel()] = self._counts
            self._counts = grown
        self._counts.index_add_(0, index, torch.ones_like(index))

    def counts(self, n_items: int) -> Tensor:
        """(n_items,) long labels per clip, on the CPU."""
        counts = torch.zeros(n_items, dtype=torch.long)
        held = min(n_items, self._counts.numel())
        counts[:held] = self._counts[:held]
        return counts


def exposure(
    counts: Tensor, pending_items: Tensor, allowed: Tensor, min_labels: int
) -> Exposure | None:
    """The starved clips: `count_i + pending_i < min_labels` among the `allowed` clips.

    None when the rule changes nothing: it is off (`min_labels` 0), no allowed clip is
    starved, or every allowed clip is (then every pair holds one already, as at the start of
    a campaign).

    Args:
        counts: (n,) long answered labels per clip (not gold).
        pending_items: (P,) long the clips of the pending tasks (not gold), one entry per clip
            per task: two raters asking at once do not both get the same starved clip.
        allowed: (n,) bool, False for clips this rater may not be shown.
        min_labels: the floor m.

    Returns:
        The focus mask and the deficit on `allowed`'s device, or None.
    """
    if min_labels <= 0 or counts.numel() == 0:
        return None
    total = counts.to(allowed.device).clone()
    if pending_items.numel():
        index = pending_items.to(allowed.device)
        total.index_add_(0, index, torch.ones_like(index))
    focus = (total < min_labels) & allowed
    starved = int(focus.sum())
    if starved == 0 or starved == int(allowed.sum()):
        return None
    deficit = int((min_labels - total[focus]).sum())
    return Exposure(focus, deficit)


__all__ = ["ClipCounts", "Exposure", "exposure"]
