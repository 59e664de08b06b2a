"""Where the engine computes: CUDA when present, else the CPU; chosen once per process."""

from __future__ import annotations

from functools import cache

import torch


@cache
def default_device() -> torch.device:
    """`cuda` when a GPU is visible, else `cpu`. Cached: the choice is made once."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """float64 everywhere: long runs of rank-1 downdates need it to stay positive definite."""
    del device  # same on every device today; kept so callers ask per device
    return torch.float64


__all__ = ["default_device", "default_dtype"]
