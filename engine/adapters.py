"""Drive the engine through the interface of ASAP's public Python code (a win-count matrix).

External benchmark suites written for ASAP (Mikhailiuk et al. 2020) hold an n x n matrix M of
win counts, `M[i, j]` = times i beat j, and ask a sampler for the next pairs. `make_strategy`
returns such a sampler backed by a `Campaign` with no reward model (K = 0), forced choice and
Thurstone noise on the JOD scale (1 JOD = 75 % preference, sigma = 1.4826).
"""

from __future__ import annotations

import numpy as np
import torch

from engine.campaign import Campaign, CampaignConfig, Judgment
from engine.likelihoods import Outcome
from engine.state import PriorScales

JOD_NOISE_SD = 1.4826  # Phi(1 / sigma) = 0.75: one JOD is a 75 % preference
PRIOR_SCALE_JOD = 3.0  # prior sd of a clip's quality in JOD; wide, clip scores of 1-10 JOD


class WinMatrixStrategy:
    """A stateful pair sampler with the shape of ASAP's API.

    The posterior persists between calls; each call feeds it only the counts that grew since
    the previous call (in row-major order), then selects a batch by expected information gain
    with the pending-pair shrink (MATH.md §3-4).

    Args:
        n: number of conditions (clips).
        seed: seeds the softmax rule's generator when one is configured.
        config: override the default campaign settings (must have no criteria).
    """

    def __init__(self, n: int, seed: int = 0, config: CampaignConfig | None = None) -> None:
        if n < 2:
            raise ValueError(f"need at least 2 conditions, got {n}")
        self.n = n
        self.generator_ = torch.Generator().manual_seed(seed)
        self.campaign_ = Campaign(
            config
            or CampaignConfig(
                criteria=(),
                prior=PriorScales(residual_scale=PRIOR_SCALE_JOD),
                noise_sd=JOD_NOISE_SD,
            ),
            device="cpu",
        )
        self.campaign_.add_clips(count=n)
        self.seen_ = np.zeros((n, n), dtype=np.int64)

    def next_pairs(self, n: int, M: np.ndarray, batch_size: int = 1) -> list[tuple[int, int]]:
        """Feed the new counts in M, then return `batch_size` pairs (i, j), i < j.

        Args:
            n: number of conditions; must match the constructor's.
            M: (n, n) non-negative integer win counts so far (M[i, j] = times i beat j).
            batch_size: number of pairs to return.

        Raises:
            ValueError: shape mismatch, negative or non-integer counts, or counts that shrank.
        """
        counts = np.asarray(M)
        if n != self.n or counts.shape != (self.n, self.n):
            raise ValueError(f"expected n = {self.n} and an {self.n} x {self.n} matrix")
        if not np.all(np.isfinite(counts)) or np.any(counts < 0) or np.any(counts % 1):
            raise ValueError("win counts must be non-negative integers")
        counts = counts.astype(np.int64)
        if np.any(np.diag(counts)):
            raise ValueError("the diagonal of M must be 0 (no clip is compared with itself)")
        new = counts - self.seen_
        if np.any(new < 0):
            raise ValueError("win counts may only grow between calls")
        winners, losers = np.nonzero(new)
        judgments = [
            Judgment.pair(None, int(i), int(j), Outcome.WIN)
            for i, j in zip(winners, losers, strict=True)
            for _ in range(int(new[i, j]))
        ]
        self.campaign_.observe(judgments)
        self.seen_ = counts
        tasks = self.campaign_.next_pairs(
            count=batch_size, hold=False, repeat_pairs=True, generator=self.generator_
        )
        return [(t.first, t.second) for t in tasks]


def make_strategy(n: int, seed: int = 0) -> WinMatrixStrategy:
    """`make_strategy(n, seed).next_pairs(n, M, batch_size) -> [(i, j), ...]`."""
    return WinMatrixStrategy(n, seed)


__all__ = ["JOD_NOISE_SD", "WinMatrixStrategy", "make_strategy"]
