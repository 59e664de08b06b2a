"""The pairing scope as a list: every pair of clips that share a group (the same prompt)."""

from __future__ import annotations

import torch
from torch import Tensor


def scope_pairs(groups: Tensor) -> tuple[Tensor, Tensor]:
    """Every pair i < j of clips in the same group, as (first, second), without a Python loop
    over groups: clips sorted by group, each paired with the rest of its run."""
    n = groups.numel()
    device = groups.device
    order = torch.argsort(groups, stable=True)
    sorted_groups = groups[order]
    starts = torch.ones(n, dtype=torch.bool, device=device)
    starts[1:] = sorted_groups[1:] != sorted_groups[:-1]
    run_start = torch.nonzero(starts).flatten()
    run_size = torch.diff(run_start, append=run_start.new_tensor([n]))
    run_end = torch.repeat_interleave(run_start + run_size, run_size)
    partners = run_end - torch.arange(n, device=device) - 1  # later clips in the same run
    first = torch.repeat_interleave(torch.arange(n, device=device), partners)
    offset = torch.arange(first.numel(), device=device) - torch.repeat_interleave(
        torch.cumsum(partners, 0) - partners, partners
    )
    first, second = order[first], order[first + 1 + offset]
    return torch.minimum(first, second), torch.maximum(first, second)


__all__ = ["scope_pairs"]
