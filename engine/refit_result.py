"""What a refitted copy of a campaign hands back for its adoption (`Campaign.refit_result`,
`Campaign.adopt_refit`): its state, without the labels of its history.

A copy made to refit the prior away from the campaign that serves requests (docs/MATH.md §1,
"Learning the split"; `Campaign.compute_refit`) applies its refit, then catches up with the
entries that campaign took since (`Campaign.catch_up`). Its history is then the campaign's up
to the copy, the refit, and the campaign's entries since as the copy applied them (runs of
label batches as one batch: `engine.campaign.reapplied`). The campaign holds every one of
those labels already, so the copy need not send them back: a label batch travels as its size,
a rater's labels (engine.rater_book) as their count, and the adoption takes the campaign's own
labels in their place. Sending back a long history
would cost the campaign most of its adoption: the labels are tens of thousands of small
objects to rebuild, where the posterior is a few tensors.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import torch
from torch import Tensor

from engine.clips import ClipRegistry
from engine.exposure import ClipCounts
from engine.forms import PosteriorForm
from engine.history import ClipsAdded, Refine, Refit
from engine.rater_book import RaterBook
from engine.task_choice import TaskClock

# an entry the copy applied after its refit: a label batch as its size, else the entry itself
TakenEntry = int | ClipsAdded | Refine


@dataclass(frozen=True, eq=False)
class RefitResult:
    """A refitted copy's state for `Campaign.adopt_refit`.

    Attributes:
        refit: the refit the copy applied (its values).
        entries: the history entries before the refit: the campaign's where the copy was made.
        taken: each entry of the copy's history after its refit, in order: a label batch as
            its number of labels, a clip batch or refine as itself.
        label_count: the labels the copy's history holds.
        clip_counts: the copy's labels per clip (engine.exposure).
        form: the copy's posterior (engine.forms).
        clips: the copy's clip registry.
        raters: the copy's rater book (reliabilities under the refit), without its raters'
            labels (`RaterBook.without_labels`): the campaign holds them.
        rater_labels: each rater's labels in the copy's book, in its order.
        clock: the copy's seconds per task kind.
        pair_cuts: the comparison outcome cuts under the refit's tie margin.
        level_cuts: the emoji level cuts under the refit's thresholds (None: no emoji scale).
        device: where the copy's tensors live.
        dtype: the copy's floating dtype.
    """

    refit: Refit
    entries: int
    taken: tuple[TakenEntry, ...]
    label_count: int
    clip_counts: ClipCounts
    form: PosteriorForm
    clips: ClipRegistry
    raters: RaterBook
    rater_labels: dict[Hashable, int]
    clock: TaskClock
    pair_cuts: Tensor
    level_cuts: Tensor | None
    device: torch.device
    dtype: torch.dtype

    @property
    def n_items(self) -> int:
        """The clips the copy holds."""
        return self.form.n_items


__all__ = ["RefitResult", "TakenEntry"]
