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

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

# clips per batch up to which `ClipCounts.add` tallies in Python (a label's two clips), where
# `np.unique`'s calls cost more than the tally
FEW_ITEMS = 64


@dataclass(frozen=True)
class Exposure:
    """The starved clips of one request.

    Attributes:
        focus: (n,) bool, the starved clips the rater may be shown; every pair chosen holds one.
        deficit: labels still owed to them, `sum_i (m - count_i)`: a batch holds at most this
            many pairs while the rule is on.
        count: how many clips `focus` holds (kept with the floor: counting the mask would
            pass over every clip).
        groups: (G,) bool, which groups hold a starved clip, when the campaign has groups: a
            block-form search skips the others' kept bounds.
    """

    focus: Tensor
    deficit: int
    count: int
    groups: Tensor | None = None


@dataclass
class _Floor:
    """The clips below one floor, kept in step with every label (`ClipCounts`)."""

    min_labels: int
    device: torch.device
    n_items: int
    low: Tensor  # (n,) bool on `device`: count_i < min_labels
    n_low: int
    owed: int  # sum over the low clips of min_labels - count_i
    groups: Tensor | None  # (n,) long the group of each clip, when the caller has groups
    group_low: Tensor | None  # (G,) long low clips per group, on `device`
    # (G,) bool `group_low > 0`, kept with it (made from it where absent, as in a floor saved
    # before it existed): a request then copies G bools, not G longs
    group_focus: Tensor | None = None


class ClipCounts:
    """How many labels each clip has (answered, not gold): one count per clip, grown as clips
    are added, one scatter-add per label batch. Beside it, for the floor last asked about,
    which clips are below it (and how many per group): kept in step with each label, so that a
    request corrects it for its few pending and excluded clips (`starved`) instead of passing
    over a million clips."""

    def __init__(self) -> None:
        self._counts = torch.zeros(0, dtype=torch.long)
        self._floor: _Floor | None = None

    def add(self, items: Iterable[int]) -> None:
        """Count one label for each clip listed (a clip listed twice counts twice).

        On the counts' NumPy view (they live on the CPU): a label's few ints cost a torch
        call each far more than their arithmetic; the floor's masks, on their device, change
        only where a clip crosses the floor."""
        listed = list(items)
        if not listed:
            return
        size = max(listed) + 1
        if size > self._counts.numel():
            grown = torch.zeros(size, dtype=torch.long)
            grown[: self._counts.numel()] = self._counts
            self._counts = grown
        counts = self._counts.numpy()
        if len(listed) <= FEW_ITEMS:
            # a label's few clips: Python ints, where each NumPy call costs more than its work
            tally = sorted(Counter(listed).items())
            unique = np.fromiter((clip for clip, _ in tally), dtype=np.int64, count=len(tally))
            times = np.fromiter((t for _, t in tally), dtype=np.int64, count=len(tally))
        else:
            unique, times = np.unique(np.asarray(listed, dtype=np.int64), return_counts=True)
        was = counts[unique]  # a copy: fancy indexing
        counts[unique] += times
        floor = self._floor
        if floor is None:
            return
        # the kept floor follows: only clips that crossed it change
        inside = unique < floor.n_items
        unique, was = unique[inside], was[inside]
        now = counts[unique]
        m = floor.min_labels
        left = (was < m) & (now >= m)
        floor.n_low -= int(left.sum())
        floor.owed -= int((m - np.minimum(was, m)).sum() - (m - np.minimum(now, m)).sum())
        gone = torch.from_numpy(unique[left])
        if gone.numel():
            floor.low[gone.to(floor.device)] = False
            if floor.group_low is not None and floor.groups is not None:
                where = floor.groups[gone].to(floor.device)
                floor.group_low.index_add_(
                    0, where, torch.full((gone.numel(),), -1, dtype=torch.long, device=floor.device)
                )
                if floor.group_focus is not None:
                    floor.group_focus[where] = floor.group_low[where] > 0

    def counts(self, n_items: int) -> Tensor:
        """(n_items,) long labels per clip, on the CPU."""
        counts = torch.zeros(n_items, dtype=torch.long)
        held = min(n_items, self._counts.numel())
        counts[:held] = self._counts[:held]
        return counts

    def _kept_floor(
        self, n_items: int, min_labels: int, device: torch.device, groups: Tensor | None
    ) -> _Floor:
        """The floor's state for n clips: made on first use (or a new floor, device or group
        layout), extended over clips added since."""
        floor = self._floor
        grouped = groups is not None
        if (
            floor is None
            or (floor.min_labels, floor.device) != (min_labels, device)
            or (floor.groups is not None) != grouped
            or n_items < floor.n_items
        ):
            floor = self._floor = _Floor(
                min_labels,
                device,
                0,
                torch.zeros(0, dtype=torch.bool, device=device),
                0,
                0,
                None,
                torch.zeros(0, dtype=torch.long, device=device) if grouped else None,
            )
        if n_items > floor.n_items:
            counts = self.counts(n_items)[floor.n_items :]
            low = counts < min_labels
            floor.low = torch.cat((floor.low, low.to(device)))
            floor.n_low += int(low.sum())
            floor.owed += int((min_labels - counts[low]).sum())
            floor.n_items = n_items
        if groups is not None and floor.group_low is not None:
            groups = groups.cpu()
            if floor.groups is None or floor.groups.numel() != n_items:
                # a clip's group never changes; new clips come with theirs: counted afresh
                floor.groups = groups
                n_groups = int(groups.max()) + 1 if groups.numel() else 0
                floor.group_low = torch.zeros(n_groups, dtype=torch.long, device=device)
                floor.group_low.index_add_(0, groups.to(device), floor.low.to(torch.long))
                floor.group_focus = None
        if floor.group_low is not None and floor.group_focus is None:
            floor.group_focus = floor.group_low > 0
        return floor

    def starved(
        self,
        n_items: int,
        pending_items: Sequence[int],
        excluded: Sequence[int],
        min_labels: int,
        device: torch.device,
        groups: Tensor | None = None,
    ) -> Exposure | None:
        """The starved clips of a request: `count_i + pending_i < min_labels` among the clips
        not `excluded` (`pending_items` one entry per clip per pending task, gold aside: two
        raters asking at once do not both get the same starved clip), in O(pending +
        excluded) beyond a copy of the kept masks; with `groups` ((n,) long), also which
        groups hold a starved clip (`Exposure.groups`).

        None when the rule changes nothing: it is off (`min_labels` 0), no clip is starved,
        or every clip that may be shown is (then every pair holds one already, as at the
        start of a campaign)."""
        if min_labels <= 0 or n_items == 0:
            return None
        floor = self._kept_floor(n_items, min_labels, device, groups)
        n_low, owed = floor.n_low, floor.owed
        held = Counter(i for i in pending_items if 0 <= i < n_items)
        barred = {i for i in excluded if 0 <= i < n_items}
        removed: list[int] = []
        touched = sorted(held.keys() | barred)
        known = self._counts.numel()
        inside = [i for i in touched if i < known]
        # one read of the touched counts: a tensor index per clip costs more than the rest
        counts = self._counts.numpy()
        read = dict(zip(inside, counts[inside].tolist(), strict=True)) if inside else {}
        for item in touched:
            count = read.get(item, 0)
            if count >= min_labels:
                continue  # not below the floor: pending tasks or a bar change nothing
            total = count + held[item]
            if item in barred or total >= min_labels:
                n_low -= 1
                owed -= min_labels - count
                removed.append(item)
            else:
                owed -= held[item]
        if n_low == 0 or n_low == n_items - len(barred):
            return None
        focus, group_focus = floor.low, None
        if floor.group_low is not None:
            group_focus = floor.group_focus  # read only downstream
            if removed:
                # only the groups of the clips this request removes change
                taken = torch.tensor(removed, dtype=torch.long)
                where, count = torch.unique(
                    floor.groups[taken].to(device),  # type: ignore[index]
                    return_counts=True,
                )
                group_focus = group_focus.clone()
                group_focus[where] = floor.group_low[where] > count
        if removed:
            focus = focus.clone()
            focus[torch.tensor(removed, device=device)] = False
        return Exposure(focus, owed, n_low, group_focus)


__all__ = ["ClipCounts", "Exposure"]
