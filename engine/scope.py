"""The pairing scope as a list: every pair of clips that share a group (the same prompt)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# Blocks are used while their padded size G m^2 is at most this many times the P listed pairs
# (equal groups: G m^2 = 2 P + n); one large group among small ones pads every block to it.
BLOCK_PADDING_LIMIT = 4


def _runs(groups: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The clips sorted by group (stable), whether each sorted clip starts its group's run,
    and where the runs start."""
    order = torch.argsort(groups, stable=True)
    sorted_groups = groups[order]
    starts = torch.ones(groups.numel(), dtype=torch.bool, device=groups.device)
    starts[1:] = sorted_groups[1:] != sorted_groups[:-1]
    return order, starts, torch.nonzero(starts).flatten()


def scope_pairs(groups: Tensor) -> tuple[Tensor, Tensor]:
    """Every pair i < j of clips in the same group, as (first, second), without a Python loop
    over groups: clips sorted by group, each paired with the rest of its run."""
    n = groups.numel()
    device = groups.device
    order, _, run_start = _runs(groups)
    run_size = torch.diff(run_start, append=run_start.new_tensor([n]))
    run_end = torch.repeat_interleave(run_start + run_size, run_size)
    partners = run_end - torch.arange(n, device=device) - 1  # later clips in the same run
    first = torch.repeat_interleave(torch.arange(n, device=device), partners)
    offset = torch.arange(first.numel(), device=device) - torch.repeat_interleave(
        torch.cumsum(partners, 0) - partners, partners
    )
    first, second = order[first], order[first + 1 + offset]
    return torch.minimum(first, second), torch.maximum(first, second)


@dataclass(frozen=True)
class GroupBlocks:
    """Where each same-group pair sits in its group's block of an n x n matrix.

    `members[g, a]` is the a-th clip of group g (groups padded to the largest with the index
    n, a row of zeros for the caller to append); the pair (first[p], second[p]) sits at the
    flat index `slot[p]` of the (G, m, m) stack of the groups' blocks. Per-group products then
    cost O(G m^2 Q) and one gather, where gathering Q-vectors of both clips of P pairs cost
    O(P Q) scattered reads (the believer shrink's pair term, engine.selection).
    """

    members: Tensor  # (G, m) long
    slot: Tensor  # (P,) long


def group_blocks(groups: Tensor, first: Tensor, second: Tensor) -> GroupBlocks | None:
    """The block layout of the listed same-group pairs (`scope_pairs(groups)`), or None when
    padding to the largest group would make the blocks more than BLOCK_PADDING_LIMIT times
    the list."""
    n = groups.numel()
    device = groups.device
    if n == 0 or first.numel() == 0:
        return None
    order, starts, run_start = _runs(groups)
    run = torch.cumsum(starts.long(), 0) - 1  # group slot of each sorted clip
    rank = torch.arange(n, device=device) - run_start[run]  # place within its group
    n_groups, size = (
        int(run[-1]) + 1,
        int(torch.diff(run_start, append=run_start.new_tensor([n])).max()),
    )
    if n_groups * size * size > BLOCK_PADDING_LIMIT * first.numel():
        return None
    members = torch.full((n_groups, size), n, dtype=torch.long, device=device)
    members[run, rank] = order
    row = torch.empty(n, dtype=torch.long, device=device)
    column = torch.empty(n, dtype=torch.long, device=device)
    row[order], column[order] = run, rank
    if not bool((row[first] == row[second]).all()):
        raise ValueError("group blocks hold same-group pairs only")
    return GroupBlocks(members, (row[first] * size + column[first]) * size + column[second])


__all__ = ["BLOCK_PADDING_LIMIT", "GroupBlocks", "group_blocks", "scope_pairs"]
