"""The clip registry: every clip's raw reward-model scores, context, prompt group and feature
vector, and the campaign's score standardisation. One owner for these facts; the campaign asks
it.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from engine.gating import check_features

DEFAULT_CONTEXT = "default"


@dataclass(frozen=True)
class ClipBatch:
    """A validated batch of clips, not yet registered (`ClipRegistry.plan`, then `commit`)."""

    raw: Tensor  # (B, K) raw scores, NaN where missing
    context: Tensor  # (B,) long context indices
    group: Tensor  # (B,) long group indices
    context_names: dict[Hashable, int]  # every context name after the batch
    group_names: dict[Hashable, int]  # every group name after the batch
    group_context: list[int]  # each group's context after the batch
    features: Tensor  # (B, D) feature vectors (D = 0 without a feature gate)


class ClipRegistry:
    """Clips in the order they were added, their contexts (prompt categories) and groups
    (prompts), and the per-criterion centre and scale that standardise their scores.

    Args:
        n_criteria: K, the reward model's criteria.
        device, dtype: where and how scores are kept.
        feature_dim: D, the length of a clip's feature vector (0: no feature gate).
    """

    def __init__(
        self, n_criteria: int, device: torch.device, dtype: torch.dtype, feature_dim: int = 0
    ) -> None:
        self.n_criteria = n_criteria
        self.feature_dim = feature_dim
        self.device, self.dtype = device, dtype
        self._raw = torch.zeros(0, n_criteria, dtype=dtype, device=device)
        # raw, never standardised: a one-hot vector must stay one-hot (MATH.md §8)
        self._features = torch.zeros(0, feature_dim, dtype=dtype, device=device)
        self._context_names: dict[Hashable, int] = {}
        self._group_names: dict[Hashable, int] = {}
        self._context: list[int] = []
        self._group: list[int] = []
        self._group_context: list[int] = []  # each group's context (a prompt has one)
        self._groups_tensor: Tensor | None = None  # cache of _group as a tensor
        self._center = torch.zeros(n_criteria, dtype=dtype, device=device)
        self._scale = torch.ones(n_criteria, dtype=dtype, device=device)

    @property
    def n_items(self) -> int:
        return len(self._group)

    @property
    def n_contexts(self) -> int:
        return len(self._context_names)

    @property
    def context_names(self) -> tuple[Hashable, ...]:
        return tuple(self._context_names)

    @property
    def groups(self) -> Tensor:
        """(n,) long group ids."""
        if self._groups_tensor is None:
            self._groups_tensor = torch.tensor(self._group, dtype=torch.long, device=self.device)
        return self._groups_tensor

    @property
    def contexts(self) -> Tensor:
        """(n,) long context ids."""
        return torch.tensor(self._context, dtype=torch.long, device=self.device)

    @property
    def features(self) -> Tensor | None:
        """(n, D) every clip's feature vector; None without a feature gate."""
        return self._features if self.feature_dim else None

    def same_group(self, first: int, second: int) -> bool:
        return self._group[first] == self._group[second]

    def as_scores(self, scores: object, count: int | None) -> Tensor:
        """Raw scores (B, K) from rows (None where missing) or a tensor; `count` clips when
        there are no criteria.

        Raises:
            ValueError: wrong shapes, infinite scores, or a count that disagrees.
        """
        n_criteria = self.n_criteria
        if scores is None:
            if count is None or count < 0:
                raise ValueError("give the clips' scores, or their count when there are none")
            if n_criteria:
                raise ValueError(f"this campaign has {n_criteria} criteria: scores are required")
            return self._raw.new_zeros(count, 0)
        if isinstance(scores, Tensor):
            raw = scores.to(dtype=self.dtype, device=self.device)
        else:
            rows = [[math.nan if v is None else float(v) for v in row] for row in scores]  # type: ignore[union-attr]
            if any(len(row) != n_criteria for row in rows):
                raise ValueError(f"every clip needs {n_criteria} scores (None where missing)")
            raw = torch.tensor(rows, dtype=self.dtype, device=self.device).reshape(-1, n_criteria)
        if raw.dim() != 2 or raw.shape[1] != n_criteria:
            raise ValueError(f"scores must have shape (clips, {n_criteria})")
        if bool(torch.isinf(raw).any()):
            raise ValueError("scores must be finite (use None or NaN for a missing score)")
        if count is not None and count != raw.shape[0]:
            raise ValueError(f"count={count} but {raw.shape[0]} rows of scores")
        return raw

    def plan(
        self,
        raw: Tensor,
        contexts: Sequence[Hashable | None],
        groups: Sequence[Hashable | None],
        *,
        one_context_per_group: bool,
        features: object = None,
    ) -> ClipBatch:
        """Validate a batch (contexts: None is the default; groups: None is the clip's own;
        features: rows of D numbers or a (B, D) tensor, None for zeros) without registering it.

        Raises:
            ValueError: a length that disagrees, a feature vector of the wrong length or not
                finite, or (when asked) a group with two contexts.
        """
        n_new, start = raw.shape[0], self.n_items
        if len(contexts) != n_new or len(groups) != n_new:
            raise ValueError(f"contexts and groups need one entry per clip ({n_new})")
        checked = check_features(features, n_new, self.feature_dim, self._features)
        context_names = dict(self._context_names)
        context_index = [
            context_names.setdefault(DEFAULT_CONTEXT if c is None else c, len(context_names))
            for c in contexts
        ]
        group_names = dict(self._group_names)
        group_index = [
            group_names.setdefault(("clip", start + b) if g is None else g, len(group_names))
            for b, g in enumerate(groups)
        ]
        group_context = self._group_context + [-1] * (len(group_names) - len(self._group_names))
        for g, c in zip(group_index, context_index, strict=True):
            if group_context[g] == -1:
                group_context[g] = c
            elif group_context[g] != c and one_context_per_group:
                raise ValueError(
                    "every clip of a prompt group must share its context in a campaign kept "
                    'in blocks (structure="blocks" or "factorised")'
                )
        long = {"dtype": torch.long, "device": self.device}
        return ClipBatch(
            raw,
            torch.tensor(context_index, **long),
            torch.tensor(group_index, **long),
            context_names,
            group_names,
            group_context,
            checked,
        )

    def commit(self, batch: ClipBatch, *, refresh_statistics: bool) -> None:
        """Register a planned batch; `refresh_statistics` re-derives the standardisation over
        every clip (before the first label: after it the statistics stay frozen, since changing
        them would change what the learned weights mean)."""
        self._context_names, self._group_names = batch.context_names, batch.group_names
        self._context += batch.context.tolist()
        self._group += batch.group.tolist()
        self._group_context = batch.group_context
        self._groups_tensor = None
        self._raw = torch.cat((self._raw, batch.raw))
        self._features = torch.cat((self._features, batch.features))
        if refresh_statistics:
            self._center, self._scale = score_statistics(self._raw)

    def standardised(self, raw: Tensor | None = None) -> Tensor:
        """`(raw - centre) / scale` of `raw`, or of every clip's scores."""
        return ((self._raw if raw is None else raw) - self._center) / self._scale


def score_statistics(raw: Tensor) -> tuple[Tensor, Tensor]:
    """Per criterion mean and sd over the present scores; sd 1 where fewer than 2 or flat."""
    present = ~torch.isnan(raw)
    count = present.sum(0)
    filled = torch.where(present, raw, torch.zeros_like(raw))
    center = filled.sum(0) / count.clamp_min(1)
    deviation = torch.where(present, raw - center, torch.zeros_like(raw))
    var = deviation.square().sum(0) / (count - 1).clamp_min(1)
    scale = torch.where((count >= 2) & (var > 0), torch.sqrt(var), torch.ones_like(var))
    return center, scale


__all__ = ["DEFAULT_CONTEXT", "ClipBatch", "ClipRegistry", "score_statistics"]
