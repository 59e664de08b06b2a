"""The posterior of a campaign whose questions stay inside prompt groups, kept in the form its
precision has: one block per group plus a border on the shared weight blocks.

theta = [f (the clips, by group) | w (the named weight blocks: global, one per context)]. Every
observation direction `a` lies in one group's clips (a pair of that group, or one clip), so
the precision is block-arrowhead under ADF and EP, and the same Gaussian is held exactly in
conditional form (docs/MATH.md §6):

    w ~ N(m_w, S_w)                       the border: D = K (1 + C) weights, dense
    f_g | w ~ N(A_g w + b_g, P_g)         per group g, independent across groups given w

A clip's row of A_g is supported on the global block and its own context's block only (a
group's clips share one context), so it is stored as 2K numbers (`load`), plus the local extra
blocks' (the side offset b, and the feature gate's vec(W), on which every clip's prior loads
with `p kron s`, MATH.md §8). One rank-1 step in
group g, `m' = m + alpha S a`, `S' = S + beta (S a)(S a)'` (an ADF step, or an EP site change)
becomes, with `u = P_g a`, `r = A_g' a`, `c = S_w r`, `q = r' c`, `k = beta / (1 + beta q)`:

    m_w' = m_w + alpha c          S_w' = S_w + beta c c'
    A_g' = A_g + k u r'           P_g' = P_g + k u u'
    b_g' = b_g + u (alpha - k (r' m_w + alpha q))

and leaves every other group's conditional alone: O(m^2 + m K + D^2) per label, whatever n.
Marginals are `E f_g = A_g m_w + b_g` and `Cov f_g = P_g + A_g S_w A_g'`.

The state is updated in place: a copy per label would cost O(n) and undo the point of the form.

With `across_groups` set (the "factorised" form, for pair_scope="any" past the dense limit) a
pair of two groups g, h is applied too, approximately: the exact ADF step on the joint, then
the projection back onto "groups independent given w" that keeps each (w_L, f_g) marginal
exact, L the group's own weight blocks (docs/MATH.md §6, "pairs across groups"). For each of
the two groups, with its part u_g = P_g a_g, c_L = (S_w r)[L] and rho_g = S_LL^+ c_L (= r[L]
when both groups share a context), q_g = c_L' rho_g and k_g = beta / (1 + beta q_g):

    A_g' = A_g + k_g u_g rho_g'   P_g' = P_g + k_g u_g u_g'
    b_g' = b_g + u_g (alpha - k_g (rho_g' m_L + alpha q_g))

and the border takes the exact step. What is dropped is the pair's coupling of f_g and f_h
given w; TrueSkill's factorised ADF drops the same (with no weights to share).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple, TypeVar

import numpy as np
import torch
from torch import Tensor

from engine.blocks import GATE, Extra, Layout, border_layout
from engine.ep import TOLERANCE, Sites, ep_sweeps
from engine.gating import gate_loadings, gate_variances
from engine.questions import NO_SECOND
from engine.selection import Pending, shrink_coefficients
from engine.state import (
    Posterior,
    PriorScales,
    add_contexts,
    empty_posterior,
    gate_missing_variance,
    grow_block,
)
from engine.update import FEW_EVENTS, BorderPart, Events, adf_site, event_moment_function

_Kept = TypeVar("_Kept")  # what `_kept_for` keeps

CHUNK_ELEMENTS = 2**18  # block entries per chunk of groups on a CPU: ~2 MiB of float64
GPU_CHUNK_ELEMENTS = 2**24
# Groups are padded to the largest; a group that outgrows the padding widens it by at least
# this factor, so widening stays rare.
WIDEN_FACTOR = 2


def take(values: Tensor, index: slice | Tensor) -> Tensor:
    """`values[index]` along the first dimension: a view for a slice, else `index_select`.
    A direct call: advanced indexing parses its key in Python on every read, which costs
    more than the gather itself on the few rows a pick reads."""
    if isinstance(index, slice):
        return values[index]
    return values.index_select(0, index)


class GroupMarginals(NamedTuple):
    """Every group's marginal, padded to the largest group with clip index -1.

    Attributes:
        members: (G, M) long clip indices, -1 past the group's size.
        mean: (G, M) `E f`, 0 at padding.
        cov: (G, M, M) `Cov f` within the group, 0 at padding.
    """

    members: Tensor
    mean: Tensor
    cov: Tensor


class GroupPairs(NamedTuple):
    """The same-group pairs of a chunk of G groups by slots, the blocks cut to the chunk's
    largest group m (`GroupedPosterior.group_pair_moments`): its T = m (m - 1) / 2 slot
    pairs a < b.

    Attributes:
        first, second: (T,) long slots a < b.
        mu: (T, G) `E f_a - E f_b`.
        var: (T, G) `Var(f_a - f_b)`, floored at 0.
        valid: (T, G) bool, both slots hold a clip of the group.
    """

    first: Tensor
    second: Tensor
    mu: Tensor
    var: Tensor
    valid: Tensor


class DrawFactors(NamedTuple):
    """Cholesky factors for drawing from the posterior (`GroupedPosterior.draw_factors`).

    Attributes:
        weight: (D, D) the factor of S_w.
        within: (G, M, M) each group's factor of P_g (the identity on slots past its size).
    """

    weight: Tensor
    within: Tensor


class Directions(NamedTuple):
    """B observation directions in block form (`GroupedPosterior.directions`), as H parts that
    each lie in one group: a direction within a group is one part; a pair across two groups
    is two single-clip parts, the second with sign -1."""

    owner: Tensor  # (H,) long, the direction each part belongs to
    group: Tensor  # (H,) long
    slot_i: Tensor  # (H,) long slot of the first clip
    slot_j: Tensor  # (H,) long slot of the second (the first's for a single clip)
    pair: Tensor  # (H,) 1.0 for a pair within the group, 0.0 for a single clip
    sign: Tensor  # (H,) +1.0, or -1.0 for the second clip of a pair across groups
    embedded: Tensor  # (B, D) r_b = A' a_b in the full weight coordinates
    all_pairs: bool = False  # every part is a pair within its group (pair 1.0, sign +1.0)
    flat_i: Tensor | None = None  # (H,) long `group M + slot_i` (`flat_slots`), when kept
    flat_j: Tensor | None = None  # (H,) long `group M + slot_j`, when kept


class BlockShrink(NamedTuple):
    """Pending tasks' believer shrink in block form (MATH.md §4, §6): `sum_q k_q c_q c_q'`,
    with `c_q = S_{q-1} a_q`, is `A_g W A_g'` on every group through the border plus, on the
    groups holding pending tasks, the terms of their own P_g.

    Attributes:
        weight: (D, D) W = sum_q k_q Omega_q Omega_q', Omega_q the border part of c_q.
        groups: (H,) sorted long, the groups holding pending tasks.
        correction: (H, M, M) the rest of their shrink.
        coefficients: (Q, Q) U of `shrink_coefficients`; factor: (Q,) k.
        joint: the pending tasks' `JointProjections`, which a pick's candidates read their
            covariances with (`JointProjections.cross`) instead of computing it again.
    """

    weight: Tensor
    groups: Tensor
    correction: Tensor
    coefficients: Tensor
    factor: Tensor
    joint: JointProjections


class GroupedPosterior:
    """`theta ~ N(mean, cov)` over clips in groups and the weight blocks, in conditional form.

    Args:
        n_criteria: K, the reward model's criteria (0 allowed: no weight blocks).
        prior: the prior scales (MATH.md §1).
        device, dtype: where and how the state is kept.
    """

    def __init__(
        self,
        n_criteria: int,
        prior: PriorScales,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        if n_criteria < 0:
            raise ValueError(f"n_criteria must be >= 0, got {n_criteria}")
        self.n_criteria = n_criteria
        self.n_contexts = 0
        self.extra: Extra = ()  # the extra border blocks after the contexts (engine.blocks)
        # extra blocks among every group's local coordinates: a block that many questions
        # load on, kept exact (its coupling with each group's clips is kept)
        self.local_extra: tuple[str, ...] = ()
        weights = empty_posterior(n_criteria, prior, device=device, dtype=dtype)
        self.weight_mean, self.weight_cov = weights.mean, weights.cov
        like = self.weight_mean
        long = {"dtype": torch.long, "device": like.device}
        # per group, padded to the largest group M, by slot; 0 past the group's size
        # (G, M, L): A_g in its local coordinates [global | own context | local extras]
        self.load = like.new_zeros(0, 1, 2 * n_criteria)
        self.offset = like.new_zeros(0, 1)  # (G, M): b_g
        self.within = like.new_zeros(0, 1, 1)  # (G, M, M): P_g
        self.group = torch.zeros(0, **long)  # (n,)
        self.slot = torch.zeros(0, **long)  # (n,) position in its group
        self.members = torch.zeros(0, 1, **long)  # (G, M), -1 past the group's size
        self.group_size = torch.zeros(0, **long)  # (G,)
        self.group_context = torch.zeros(0, **long)  # (G,), -1 while the group is empty
        # counts every change of the state: what a cache of something derived from it checks
        self.version = 0
        # pairs across groups: refused (the exact form) or applied with the projection above
        self.across_groups = False
        # (load, offset, within) in single precision for screens that only rank, made on
        # first use and kept in step with every rank-1 step: a screen from scratch then reads
        # half the bytes and converts nothing
        self._single: tuple[Tensor, Tensor, Tensor] | None = None

    def __getstate__(self) -> dict[str, object]:
        state = dict(vars(self))
        state["_single"] = None  # derived: a snapshot need not carry it
        state.pop("_local_table", None)
        state.pop("_last_direction", None)
        state.pop("_host_layout", None)
        state.pop("_context_runs_kept", None)
        state.pop("_flat_slots", None)
        return state

    def _host(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(group, slot, group_size, group_context) as NumPy arrays on the host, for the
        per-label reads of a few ints, where a torch call per int would dwarf the work. Kept
        while the layout tensors are the same objects (add_items replaces them; nothing writes
        them in place); on a CPU they share the tensors' memory."""
        layout = (self.group, self.slot, self.group_size, self.group_context)
        return self._kept_for(
            "_host_layout", layout, lambda: tuple(t.cpu().numpy() for t in layout)
        )

    def flat_slots(self) -> Tensor:
        """(n,) each clip's position `g M + slot` in the (G, M) slot layout: a clip's row of a
        (G, M, ...) block is then one `index_select` on the blocks viewed as (G M, ...), where
        indexing by (group, slot) pairs costs several times more per call. Kept while the
        layout tensors are the same objects, as `_host`."""
        layout = (self.group, self.slot, self.members)
        return self._kept_for(
            "_flat_slots",
            layout,
            lambda: torch.add(self.slot, self.group, alpha=self.members.shape[1]),
        )

    def _kept_for(self, name: str, layout: tuple[Tensor, ...], build: Callable[[], _Kept]) -> _Kept:
        """`build()`, kept in the attribute `name` while the layout tensors are the same
        objects (add_items replaces them; nothing writes them in place)."""
        kept = self.__dict__.get(name)
        if kept is None or any(a is not b for a, b in zip(kept[0], layout, strict=True)):
            kept = (layout, build())
            setattr(self, name, kept)
        return kept[1]

    def groups_of(self, clips: list[int]) -> list[int]:
        """The groups of the given clips, as ints."""
        return self._host()[0][clips].tolist()

    def single(self) -> tuple[Tensor, Tensor, Tensor]:
        """(load, offset, within) in float32 (the blocks as they are now)."""
        if self._single is None:
            self._single = (self.load.float(), self.offset.float(), self.within.float())
        return self._single

    def _stepped(self, g: int) -> None:
        """Group g's blocks changed: bring its single-precision copy along."""
        self.version += 1
        if self._single is not None:
            load, offset, within = self._single
            load[g], offset[g], within[g] = self.load[g], self.offset[g], self.within[g]

    # layout -----------------------------------------------------------------------------------

    @property
    def n_items(self) -> int:
        return self.group.shape[0]

    @property
    def n_groups(self) -> int:
        return self.group_size.shape[0]

    @property
    def n_weights(self) -> int:
        """D = K (1 + C) plus the extra blocks: the border's size (`blocks().size`, without
        building the layout)."""
        return self.n_criteria * (1 + self.n_contexts) + sum(size for _, size in self.extra)

    def blocks(self) -> Layout:
        """The border's named blocks in w (engine.blocks): "weights", "context:<c>", extras."""
        return border_layout(self.n_criteria, self.n_contexts, extra=self.extra)

    def _border(self) -> Posterior:
        """The border alone, as the dense form's Posterior over no clips."""
        return Posterior(
            self.weight_mean, self.weight_cov, 0, self.n_criteria, self.n_contexts, self.extra
        )

    def _set_border(self, border: Posterior) -> None:
        self.weight_mean, self.weight_cov = border.mean, border.cov
        self.n_contexts, self.extra = border.n_contexts, border.extra
        self.version += 1

    @property
    def n_local(self) -> int:
        """L = 2K plus the local extras' sizes: a group's local coordinates."""
        return self.load.shape[-1]

    def local_index(self, context: Tensor) -> Tensor:
        """(..., L) positions in w of the global block, the given contexts' blocks and the
        local extra blocks (context -1, an empty group's, reads the global block twice)."""
        table = self._local_table_of(context.device)[0]
        # `table[context]`, as one index_select (context -1 wraps to the last row)
        flat = torch.remainder(context.reshape(-1), table.shape[0])
        return table.index_select(0, flat).reshape(*context.shape, table.shape[1])

    def _local_table_of(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """`local_index` of every context as a table per border layout (selection asks many
        times per pick): (C + 1, L) with context -1's row last, its rows of the contexts
        0 .. C - 1 (C, L), and their positions in the flattened (D, D) border covariance
        (C, L L), read by `_local_blocks`."""
        key = (self.n_contexts, self.local_extra, self.extra, device)
        kept = self.__dict__.get("_local_table")  # absent from snapshots of older states
        if kept is None or kept[0] != key:
            contexts = torch.arange(-1, max(self.n_contexts, 1), device=device)
            table = self._local_positions(contexts).roll(-1, 0)  # row -1: context -1
            every = table[:-1].contiguous()
            square = every[:, :, None] * self.n_weights + every[:, None, :]
            kept = (key, (table, every, square.reshape(every.shape[0], -1)))
            self._local_table = kept
        return kept[1]

    def _local_positions(self, context: Tensor) -> Tensor:
        """`local_index`, computed."""
        k = self.n_criteria
        own = torch.arange(k, device=context.device)
        index = torch.cat(
            (own.expand(*context.shape, k), (k * (1 + context)).unsqueeze(-1) + own), -1
        )
        if not self.local_extra:
            return index
        layout = self.blocks()
        extra = torch.cat([layout[name].positions(context.device) for name in self.local_extra])
        return torch.cat((index, extra.expand(*context.shape, extra.shape[0])), -1)

    def _gate_offset(self) -> int | None:
        """Where the feature gate's vec(W) starts in a group's local coordinates; None when the
        border has no gate."""
        if GATE not in self.local_extra:
            return None
        sizes = dict(self.extra)
        before = self.local_extra[: self.local_extra.index(GATE)]
        return 2 * self.n_criteria + sum(sizes[name] for name in before)

    @property
    def context(self) -> Tensor:
        """(n,) each clip's context (its group's)."""
        return self.group_context[self.group]

    # growth -----------------------------------------------------------------------------------

    def add_contexts(self, n_new: int, prior: PriorScales) -> None:
        """Add `n_new` context offset blocks, each `N(0, context_scale^2 I)`, independent
        (the dense form's border step, on w alone: clip rows of A follow, by context)."""
        self._set_border(add_contexts(self._border(), n_new, prior))

    def grow_block(self, name: str, variances: Tensor, local: bool = False) -> None:
        """`engine.state.grow_block` on the border: no clip loads on an extra block a priori.
        A `local` block joins every group's local coordinates (made in one step: it does
        not grow later); the others are reached by the projected step."""
        if name in self.local_extra:
            raise ValueError(f"the local block {name!r} is made in one step")
        self._set_border(grow_block(self._border(), name, variances))
        if local:
            self.local_extra = (*self.local_extra, name)
            zeros = self.load.new_zeros(*self.load.shape[:2], variances.shape[0])
            self.load = torch.cat((self.load, zeros), -1)
            self._single = None

    def add_items(
        self,
        scores: Tensor,
        context: Tensor,
        group: Tensor,
        prior: PriorScales,
        features: Tensor | None = None,
    ) -> range:
        """Add B clips: `f_b | w = s_b . (w + w_{c_b} + W p_b) + u_b`, u_b ~ N(0, tau_b^2),
        independent of every other clip given w (MATH.md §1, §8; the same prior as
        `engine.state.add_items`, with the missing-score variance
        `E[w_k^2] + sigma_context^2 (+ gate_sd^2 |p_b|^2)` per missing score).

        Args:
            scores: (B, K) standardised scores, NaN where missing.
            context: (B,) long context of each clip; every context must exist.
            group: (B,) long group of each clip: an existing group, or a new one (ids past the
                last group create groups up to the largest id). A group has one context.
            prior: the residual and context scales.
            features: (B, D) feature vectors, when the border has the local "gate" block.

        Returns:
            The new clips' indices.

        Raises:
            ValueError: wrong shapes, an unknown context, or two contexts in one group; nothing
                is added then.
        """
        n_new, k = scores.shape[0], self.n_criteria
        if scores.shape != (n_new, k) or context.shape != (n_new,) or group.shape != (n_new,):
            raise ValueError(f"scores must be (B, {k}), context and group (B,)")
        gate_at = self._gate_offset()
        if (gate_at is None) != (features is None):
            raise ValueError("features go with a border that has a feature gate, and only then")
        if features is not None and (
            features.shape[0] != n_new or features.shape[1] * k != self.blocks()[GATE].size
        ):
            raise ValueError(f"features must be (B, D) with D K = {self.blocks()[GATE].size}")
        device = self.offset.device
        context, group = context.to(device), group.to(device)
        start = self.n_items
        if n_new == 0:
            return range(start, start)
        if int(context.min()) < 0 or int(context.max()) >= max(self.n_contexts, 1):
            raise ValueError("a clip refers to a context the posterior does not have")
        if int(group.min()) < 0:
            raise ValueError("group ids must be >= 0")
        n_groups = max(self.n_groups, int(group.max()) + 1)
        group_context = torch.cat(
            (self.group_context, self.group_context.new_full((n_groups - self.n_groups,), -1))
        )
        # one context per group: the batch agrees with itself and with each group's clips so far
        claimed = group_context.clone()
        claimed[group] = context
        if bool((claimed[group] != context).any()) or bool(
            ((group_context >= 0) & (claimed != group_context)).any()
        ):
            raise ValueError("every clip of a group must have the group's context")
        # Validated: commit.
        old_groups, old_width = self.n_groups, self.members.shape[1]
        sizes = torch.cat((self.group_size, self.group_size.new_zeros(n_groups - old_groups)))
        order = torch.argsort(group, stable=True)
        counts = torch.bincount(group, minlength=n_groups)
        run_start = torch.cumsum(counts, 0) - counts
        rank = torch.empty_like(group)
        rank[order] = torch.arange(n_new, device=device) - run_start[group[order]]
        slot = sizes[group] + rank
        sizes = sizes + counts
        width = max(old_width, 1)
        if int(sizes.max()) > width:
            width = max(int(sizes.max()), WIDEN_FACTOR * width)
        dtype = self.offset.dtype
        missing = torch.isnan(scores)
        filled = torch.where(missing, torch.zeros_like(scores), scores).to(dtype)
        second_moment = self.weight_mean[:k].square() + torch.diagonal(self.weight_cov)[:k]
        missing_var = (missing.to(dtype) * (second_moment + prior.context_scale**2)).sum(-1)
        load = self.load.new_zeros(n_groups, width, self.n_local)
        load[:old_groups, :old_width] = self.load
        load[group, slot, : 2 * k] = torch.cat((filled, filled), -1)  # none on other extras
        if features is not None and gate_at is not None:
            features = features.to(device=device, dtype=dtype)
            gate = gate_loadings(filled, features)  # MATH.md eq. (8.1): p_b kron s_b
            load[group, slot, gate_at : gate_at + gate.shape[1]] = gate
            missing_var = missing_var + missing.to(dtype).sum(-1) * gate_missing_variance(
                features, prior
            )
        offset = self.offset.new_zeros(n_groups, width)
        offset[:old_groups, :old_width] = self.offset
        within = self.within.new_zeros(n_groups, width, width)
        within[:old_groups, :old_width, :old_width] = self.within
        within[group, slot, slot] = prior.residual_scale**2 + missing_var
        members = self.members.new_full((n_groups, width), -1)
        members[:old_groups, :old_width] = self.members
        members[group, slot] = torch.arange(start, start + n_new, device=device)
        self.load, self.offset, self.within, self.members = load, offset, within, members
        self._single = None
        self.group = torch.cat((self.group, group))
        self.slot = torch.cat((self.slot, slot))
        self.group_size = sizes
        self.group_context = claimed
        self.version += 1
        return range(start, start + n_new)

    # one direction ----------------------------------------------------------------------------

    def _direction(
        self, i: int, j: int
    ) -> tuple[int, int, int, int, Tensor, Tensor, Tensor, Tensor, float, float, float, float]:
        """For a = e_i - e_j (or e_i when j = -1): the group, its size, both slots (-1 for
        none), u = P a, r = A' a, the local weight positions, c = S_w r, q = r' c, and
        `r' m_w`, `a' b` and `a' P a` (the marginal's terms)."""
        # an update reads the direction twice (its marginal, then its step) on one state
        kept = self.__dict__.get("_last_direction")
        if kept is not None and kept[0] == (self.version, i, j):
            return kept[1]
        result = self._compute_direction(i, j)
        self._last_direction = ((self.version, i, j), result)
        return result

    def _compute_direction(
        self, i: int, j: int
    ) -> tuple[int, int, int, int, Tensor, Tensor, Tensor, Tensor, float, float, float, float]:
        """`_direction`, computed."""
        group, slot, group_size, group_context = self._host()
        g, si = int(group[i]), int(slot[i])
        sj = NO_SECOND
        if j != NO_SECOND:
            if int(group[j]) != g:
                raise ValueError(
                    f"clips {i} and {j} are in different groups: the structured posterior "
                    "takes pairs within a group (across_groups is off)"
                )
            sj = int(slot[j])
        size = int(group_size[g])
        within, load, offset = self.within[g, :size], self.load[g], self.offset[g]
        table = self._local_table_of(self.group.device)[0]
        local = table[int(group_context[g]) % table.shape[0]]  # `local_index`, one view
        if sj != NO_SECOND:
            u, r = within[:, si] - within[:, sj], load[si] - load[sj]
            own = (offset[si] - offset[sj], u[si] - u[sj])
        else:
            u, r = within[:, si].clone(), load[si].clone()
            own = (offset[si], u[si])
        c = self.weight_cov.index_select(1, local) @ r
        # the scalars, read back in one transfer: q = r' c, r' m_w, a' b and a' P a
        q, r_mean, offset_mean, own_var = torch.stack(
            (r @ c.index_select(0, local), r @ self.weight_mean.index_select(0, local), *own)
        ).tolist()
        return g, size, si, sj, u, r, local, c, q, r_mean, offset_mean, own_var

    def _across(self, i: int, j: int) -> bool:
        """Whether (i, j) is a pair across groups (refused unless `across_groups`)."""
        group = self._host()[0]
        if j == NO_SECOND or group[i] == group[j]:
            return False
        if not self.across_groups:
            self._direction(i, j)  # raises the exact form's error
        return True

    def _parts(
        self, i: int, j: int, border: BorderPart | None, sign: float = -1.0
    ) -> tuple[list[tuple[int, int, Tensor, float, float]], Tensor]:
        """For a = e_i + sign e_j (or e_i) plus a border part: per group touched (group, size,
        u = P_g a_g, a_g . b_g, a_g . u), and r = A' a + c in the full weight coordinates."""
        r = self.weight_mean.new_zeros(self.n_weights)
        clips = [(i, 1.0)] if j == NO_SECOND else [(i, 1.0), (j, sign)]
        by_group: dict[int, list[tuple[int, float]]] = {}
        for clip, sign in clips:
            by_group.setdefault(int(self.group[clip]), []).append((int(self.slot[clip]), sign))
        parts = []
        for g, slots in by_group.items():
            size = int(self.group_size[g])
            within, offset = self.within[g, :size], self.offset[g]
            u = sum(within[:, slot] * sign for slot, sign in slots)
            assert isinstance(u, Tensor)
            load = sum(self.load[g, slot] * sign for slot, sign in slots)
            if self.n_local:
                r.index_add_(0, self.local_index(self.group_context[g]), load)
            mean = sum(float(offset[slot]) * sign for slot, sign in slots)
            var = sum(float(u[slot]) * sign for slot, sign in slots)
            parts.append((g, size, u, mean, var))
        if border is not None:
            positions, coefficients = border
            r.index_add_(
                0,
                torch.as_tensor(positions, dtype=torch.long, device=r.device),
                r.new_tensor(coefficients),
            )
        return parts, r

    def marginal(
        self, i: int, j: int = NO_SECOND, border: BorderPart | None = None, sign: float = -1.0
    ) -> tuple[float, float]:
        """`(E z, Var z)` for z = f_i - f_j (or f_i when j = -1; f_i + f_j when `sign` is +1)
        plus the border part."""
        if border is not None or sign > 0 or self._across(i, j):
            parts, r = self._parts(i, j, border, sign)
            mu = float(r @ self.weight_mean) + sum(p[3] for p in parts)
            var = float(r @ self.weight_cov @ r) + sum(p[4] for p in parts)
            return mu, max(var, 0.0)
        *_, q, r_mean, offset_mean, own_var = self._direction(i, j)
        return r_mean + offset_mean, max(own_var + q, 0.0)

    def rank_one(
        self,
        i: int,
        j: int,
        alpha: float,
        beta: float,
        border: BorderPart | None = None,
        sign: float = -1.0,
    ) -> None:
        """`m += alpha S a`, `S += beta (S a)(S a)'` for a = e_i - e_j (or e_i when j = -1)
        plus the border part, in conditional form (module docstring; docs/MATH.md §6); a
        direction off the groups' own weight blocks (a pair across groups, a border part on an
        extra block) with the projection that keeps each group's (w_L, f_g) marginal."""
        if border is not None or sign > 0 or self._across(i, j):
            self._rank_one_projected(i, j, alpha, beta, border, sign)
            return
        g, size, _, _, u, r, _, c, q, r_mean, _, _ = self._direction(i, j)
        denominator = 1.0 + beta * q
        if not denominator > 0:
            raise FloatingPointError("the rank-1 step would make the weight covariance singular")
        k = beta / denominator
        self.offset[g, :size].add_(u, alpha=alpha - k * (r_mean + alpha * q))
        self.load[g, :size].addr_(u, r, alpha=k)
        self.within[g, :size, :size].addr_(u, u, alpha=k)
        self.weight_mean.add_(c, alpha=alpha)
        self.weight_cov.addr_(c, c, alpha=beta)
        self._stepped(g)

    def _rank_one_projected(
        self,
        i: int,
        j: int,
        alpha: float,
        beta: float,
        border: BorderPart | None,
        sign: float = -1.0,
    ) -> None:
        """`rank_one` with the projected step (module docstring): exact for a group when r
        lies in its own weight blocks L, else rho_g = S_LL^+ c_L."""
        parts, r = self._parts(i, j, border, sign)
        c = self.weight_cov @ r
        steps = []
        for g, size, u, _, _ in parts:
            local = self.local_index(self.group_context[g])
            c_local = c[local]
            outside = r.clone()
            outside[local] = 0.0
            if self.n_local == 0:
                rho, q = c_local, 0.0
            elif not bool(outside.any()):
                rho = r[local]  # r lies in this group's blocks: the step is exact
                q = float(rho @ c_local)
            else:
                block = self.weight_cov[local[:, None], local[None, :]]
                rho = torch.linalg.pinv(block, hermitian=True) @ c_local
                q = float(c_local @ rho)
            denominator = 1.0 + beta * q
            if not denominator > 0:
                raise FloatingPointError(
                    "the rank-1 step would make the weight covariance singular"
                )
            steps.append(
                (g, size, u, rho, q, beta / denominator, float(rho @ self.weight_mean[local]))
            )
        for g, size, u, rho, q, k, rho_mean in steps:
            self.offset[g, :size].add_(u, alpha=alpha - k * (rho_mean + alpha * q))
            self.load[g, :size].addr_(u, rho, alpha=k)
            self.within[g, :size, :size].addr_(u, u, alpha=k)
            self._stepped(g)
        self.weight_mean.add_(c, alpha=alpha)
        self.weight_cov.addr_(c, c, alpha=beta)

    # updates ----------------------------------------------------------------------------------

    def observe(self, events: Events, likelihood: str = "interval") -> tuple[float, Tensor, Sites]:
        """Apply `events` in order by ADF (MATH.md §2), in place.

        Returns:
            The log evidence `sum_b log Z_b`, each event's model log Z (B,) and each step's
            site (B,), as `engine.update.update_with_evidence` gives them.

        Raises:
            IndexError: an event names a clip the posterior does not have.
            ValueError: a pair across groups (nothing is applied then).
            FloatingPointError: an event produced a non-finite step.
        """
        first, second = events.first.tolist(), events.second.tolist()
        n = self.n_items
        for i, j in zip(first, second, strict=True):
            if not 0 <= i < n or not (j == NO_SECOND or 0 <= j < n):
                raise IndexError(f"an event refers to a clip outside 0..{n - 1}")
        if not self.across_groups:
            self._check_within_groups(first, second)
        borders, signs = events.border_parts(self.n_weights), events.signs()
        moments = event_moment_function(events, likelihood)
        # Python floats, one tensor each at the end: the values a tensor written per event holds
        model_log_z = [0.0] * len(first)
        site_precision = [0.0] * len(first)
        site_shift = [0.0] * len(first)
        log_evidence = 0.0
        for b, (i, j) in enumerate(zip(first, second, strict=True)):
            mu, var = self.marginal(i, j, borders[b], signs[b])
            log_z, dlog_z, d2log_z, model_log_z[b] = moments(b, mu, var)
            if not (math.isfinite(dlog_z) and math.isfinite(d2log_z)):
                raise FloatingPointError(f"event {b} produced a non-finite update")
            log_evidence += log_z
            site_precision[b], site_shift[b] = adf_site(mu, var, dlog_z, d2log_z)
            # MATH.md §2: m += S a dlog_z, S += d2log_z (S a)(S a)'
            self.rank_one(i, j, dlog_z, d2log_z, borders[b], signs[b])
        like = self.weight_mean
        return (
            log_evidence,
            like.new_tensor(model_log_z),
            Sites(like.new_tensor(site_precision), like.new_tensor(site_shift)),
        )

    def _check_within_groups(self, first: list[int], second: list[int]) -> None:
        """Raise on the first pair of clips in two groups (the exact form takes none): by
        Python ints for a few events, where each NumPy call costs more than the check.

        Raises:
            ValueError: a pair across groups.
        """
        group = self._host()[0]
        if len(first) <= FEW_EVENTS:
            across = [
                b
                for b, (i, j) in enumerate(zip(first, second, strict=True))
                if j != NO_SECOND and group[i] != group[j]
            ]
        else:
            firsts, seconds = np.asarray(first, dtype=np.int64), np.asarray(second, dtype=np.int64)
            pair = seconds != NO_SECOND
            mask = np.zeros(len(first), dtype=bool)
            mask[pair] = group[firsts[pair]] != group[seconds[pair]]
            across = np.flatnonzero(mask).tolist()
        if across:
            b = across[0]
            raise ValueError(
                f"clips {first[b]} and {second[b]} are in different groups: the "
                "structured posterior takes pairs within a group"
            )

    def copy(self) -> GroupedPosterior:
        """An independent copy (tensors cloned)."""
        twin = object.__new__(GroupedPosterior)
        for name, value in vars(self).items():
            setattr(twin, name, value.clone() if isinstance(value, Tensor) else value)
        twin._single = None  # its own, made when a screen first asks
        twin.__dict__.pop("_last_direction", None)
        twin.__dict__.pop("_host_layout", None)
        twin.__dict__.pop("_context_runs_kept", None)
        twin.__dict__.pop("_flat_slots", None)
        return twin

    # read-outs --------------------------------------------------------------------------------

    def local_blocks(self, shrink: BlockShrink | None = None) -> Tensor:
        """(C, 2K, 2K) each context's block of the border's covariance (less the pending
        shrink's W when given): what `group_marginals` reads per group."""
        weight_cov = self.weight_cov if shrink is None else self.weight_cov - shrink.weight
        return self._local_blocks(weight_cov)

    def local_factors(self, shrink: BlockShrink | None = None) -> Tensor:
        """(C, 2K, 2K) F_c with F_c F_c' = `local_blocks(shrink)`[c]: a group's border share is
        then (A_g F_c)(A_g F_c)', one small product per group instead of two. The Cholesky
        factor where every block is positive definite (a tenth of an eigendecomposition's
        cost), else from the eigenvectors, negative rounding clamped."""
        blocks = self.local_blocks(shrink)
        blocks = 0.5 * (blocks + blocks.transpose(1, 2))
        factor, info = torch.linalg.cholesky_ex(blocks)
        if not bool(info.any()):
            return factor
        values, vectors = torch.linalg.eigh(blocks)
        return vectors * values.clamp_min(0.0).sqrt()[:, None, :]

    def local_maps(
        self, shrink: BlockShrink | None = None, dtype: torch.dtype | None = None
    ) -> Tensor:
        """(C, L, L + 1) `[F_c | m_c]`: each context's `local_factors(shrink)` beside the
        border's mean in that context's local coordinates, in `dtype` when given. A group's
        rows times its context's map give its spread A_g F_c and its means' border part
        A_g m_c in one product (`group_marginals`)."""
        maps = torch.cat((self.local_factors(shrink), self._local_means()[:, :, None]), -1)
        return maps if dtype is None else maps.to(dtype)

    def _local_means(self) -> Tensor:
        """(C, L) the border's mean in each context's local coordinates."""
        return self.context_means(self.weight_mean)

    def context_means(self, vector: Tensor) -> Tensor:
        """(C, L) a (D,) vector on the border read in each context's local coordinates
        (`local_index` of every context)."""
        every = self._local_table_of(vector.device)[1]
        return vector.index_select(0, every.reshape(-1)).view(every.shape)

    def context_blocks(self, matrix: Tensor) -> Tensor:
        """(C, L, L) each context's block of a (D, D) matrix on the border: its global and own
        blocks (and the local extras), `matrix[local[:, :, None], local[:, None, :]]` as one
        gather."""
        _, every, square = self._local_table_of(matrix.device)
        blocks = matrix.reshape(-1).index_select(0, square.reshape(-1))
        return blocks.view(every.shape[0], every.shape[1], every.shape[1])

    def _times_context_maps(
        self, rows: Tensor, context: Tensor, maps: Tensor, groups: slice | Tensor
    ) -> Tensor:
        """(T, M, L + 1) each group's rows (T, M, L) times its context's map (`local_maps`).
        Where a group's rows are smaller than a map (M < L) and the groups are a slice, one
        product per context over that context's groups (index lists kept per slice) reads
        less than gathering a map per group."""
        if not isinstance(groups, slice) or rows.shape[1] >= rows.shape[2]:
            return torch.bmm(rows, maps.index_select(0, context))
        product = rows.new_empty(*rows.shape[:2], maps.shape[2])
        for c, index in self._context_runs(groups):
            product.index_copy_(0, index, torch.matmul(rows.index_select(0, index), maps[c]))
        return product

    def _context_runs(self, groups: slice) -> list[tuple[int, Tensor]]:
        """(context, positions in the slice) of the slice's groups by context (an empty
        group, context -1, counts as context 0: its rows are 0); kept per slice while the
        groups' contexts stay the same tensor (add_items replaces it; nothing writes it in
        place)."""
        kept = self.__dict__.get("_context_runs_kept")
        if kept is None or kept[0] is not self.group_context:
            kept = (self.group_context, {})
            self._context_runs_kept = kept
        key = groups.indices(self.n_groups)
        runs = kept[1].get(key)
        if runs is None:
            context = self.group_context[groups].clamp_min(0)
            order = torch.argsort(context, stable=True)
            counts = torch.bincount(context, minlength=max(self.n_contexts, 1)).tolist()
            pieces = torch.split(order, counts)
            runs = [(c, piece) for c, piece in enumerate(pieces) if piece.numel()]
            kept[1][key] = runs
        return runs

    def _local_blocks(self, weight_cov: Tensor) -> Tensor:
        """(C, 2K, 2K) each context's block of `weight_cov` (D, D): the global and own blocks."""
        return self.context_blocks(weight_cov)

    def _weight_part(
        self,
        rows: Tensor,
        context: Tensor,
        *,
        full: bool,
        weight_cov: Tensor | None = None,
        local_blocks: Tensor | None = None,
    ) -> Tensor:
        """The border's share of the marginal covariance, per group: `R_g S_{c_g} R_g'` for
        (G, m, 2K) rows R_g of A in their groups' contexts (G,), (G, m, m) when `full`, else its
        diagonal (G, m). `weight_cov` replaces S_w (a shrunk border); `local_blocks` is its
        `_local_blocks`, when the caller has them."""
        if self.n_local == 0 or rows.shape[0] == 0:
            size = rows.shape[1]
            shape = (rows.shape[0], size, size) if full else rows.shape[:2]
            return rows.new_zeros(shape)
        if local_blocks is None:
            local_blocks = self._local_blocks(self.weight_cov if weight_cov is None else weight_cov)
        product = torch.bmm(rows, local_blocks[context])
        return product @ rows.transpose(1, 2) if full else (product * rows).sum(-1)

    def _group_means(
        self,
        groups: slice | Tensor = slice(None),
        dtype: torch.dtype | None = None,
        context: Tensor | None = None,
        rows: Tensor | None = None,
    ) -> Tensor:
        """(G, M) `A_g m_w + b_g` (0 past each group's size: A and b are 0 there); in single
        precision from `single()` when `dtype` is float32 and the state is not. `context`
        (the groups' contexts, clamped at 0) and `rows` (their blocks of A, in that
        precision), when the caller has them."""
        if context is None:
            context = take(self.group_context, groups).clamp_min(0)
        local = self.local_index(context)  # (G, 2K)
        if self._reads_single(dtype):
            load, offset, _ = self.single()
            rows = take(load, groups) if rows is None else rows
            weights = self.weight_mean.to(load.dtype)[local]
            return torch.bmm(rows, weights[:, :, None])[:, :, 0] + take(offset, groups)
        rows = take(self.load, groups) if rows is None else rows
        means = (rows * self.weight_mean[local][:, None, :]).sum(-1)
        return means + take(self.offset, groups)

    def _reads_single(self, dtype: torch.dtype | None) -> bool:
        return dtype == torch.float32 and self.within.dtype != torch.float32

    def item_moments(self, shrink: BlockShrink | None = None) -> tuple[Tensor, Tensor]:
        """(n,) marginal mean and variance of every clip, in one O(n K^2) pass (by chunks of
        groups, each cache-sized); variances under a pending-task `shrink` when given."""
        if self.n_items == 0:
            return self.offset.new_zeros(0), self.offset.new_zeros(0)
        means, variances = [], []
        # [S_c | m_c] per context: a group's rows times it give its clips' border covariance
        # rows and means in one product (`_times_context_maps`)
        maps = None
        if shrink is None and self.n_local:
            blocks = self._local_blocks(self.weight_cov)
            maps = torch.cat((blocks, self._local_means()[:, :, None]), -1)
        for groups in self.group_chunks():
            if shrink is None:
                context = self.group_context[groups].clamp_min(0)
                own = torch.diagonal(self.within[groups], dim1=1, dim2=2)
                if maps is None:
                    variances.append(own.clone())
                    means.append(self.offset[groups].clone())
                    continue
                rows = self.load[groups]
                product = self._times_context_maps(rows, context, maps, groups)
                variances.append(own + (product[:, :, :-1] * rows).sum(-1))
                means.append(product[:, :, -1] + self.offset[groups])
            else:
                marginals = self.group_marginals(groups, shrink)
                variances.append(torch.diagonal(marginals.cov, dim1=1, dim2=2))
                means.append(marginals.mean)
        flat = self.group * self.members.shape[1] + self.slot
        mean = torch.cat(means).reshape(-1)[flat]
        return mean, torch.cat(variances).reshape(-1)[flat].clamp_min(0.0)

    def group_chunks(self) -> list[slice]:
        """Slices of the groups whose blocks fill about CHUNK_ELEMENTS entries each: elementwise
        passes over a chunk stay in cache."""
        block = GPU_CHUNK_ELEMENTS if self.group.device.type == "cuda" else CHUNK_ELEMENTS
        step = max(1, block // max(self.members.shape[1] ** 2, 1))
        return [slice(start, start + step) for start in range(0, self.n_groups, step)]

    def pair_moments(self, first: Tensor, second: Tensor) -> tuple[Tensor, Tensor]:
        """(P,) mean and variance of `f_i - f_j` (second = -1: of f_i). Pairs within a group
        take their group's block; pairs across groups meet through the border only,
        `Cov(f_i, f_j) = r_i' S_w r_j`."""
        single = second == NO_SECOND
        other = torch.where(single, first, second)
        across = self.group[first] != self.group[other]
        if bool(across.any()):
            alone = torch.full_like(first, NO_SECOND)
            mean_i, var_i = self.pair_moments(first, alone)
            mean_j, var_j = self.pair_moments(other, alone)
            left = self.directions(first, alone).embedded
            right = self.directions(other, alone).embedded
            cross = ((left @ self.weight_cov) * right).sum(-1)
            mean = mean_i - mean_j
            var = (var_i + var_j - 2.0 * cross).clamp_min(0.0)
            inside = torch.nonzero(~across).flatten()
            if inside.numel():
                mean[inside], var[inside] = self.pair_moments(first[inside], second[inside])
            return mean, var
        group = self.group[first]
        pair = (~single).to(self.offset.dtype)
        slot_i, slot_j = self.slot[first], self.slot[other]
        rows = self.load[group, slot_i] - self.load[group, slot_j] * pair[:, None]
        local = self.local_index(self.group_context[group])
        mean = (rows * self.weight_mean[local]).sum(-1)
        mean = mean + self.offset[group, slot_i] - self.offset[group, slot_j] * pair
        within = self.within
        var = within[group, slot_i, slot_i] + pair * (
            within[group, slot_j, slot_j] - 2.0 * within[group, slot_i, slot_j]
        )
        border = self._weight_part(rows[:, None, :], self.group_context[group], full=False)
        return mean, (var + border[:, 0]).clamp_min(0.0)

    def group_pair_moments(self, groups: slice) -> GroupPairs | None:
        """Every same-group pair of the groups in `groups` (a slice), by slots a < b, and the
        mean and variance of `f_a - f_b` from the group's marginal (MATH.md §6, "Reads"):
        `mu = E f_a - E f_b` with `E f_g = A_g m_w + b_g`, and
        `var = C_aa + C_bb - 2 C_ab` with `C = P_g + A_g S_loc A_g'` (`group_marginals`):
        batched products per chunk of groups instead of a 2K-row gather and product per pair.
        None when no group in the slice has two clips. The pairs are those of the slice's
        largest group m: a chunk of small groups does not pay for the padding a large group
        elsewhere set."""
        sizes = self.group_size[groups]
        size = int(sizes.max()) if sizes.numel() else 0
        if size < 2:
            return None
        first, second = torch.triu_indices(size, size, 1, device=sizes.device)
        marginals = self.group_marginals(groups)
        means = marginals.mean[:, :size]  # (G, m)
        cov = marginals.cov[:, :size, :size]
        # slots first, groups last: a pair's terms are then whole rows to copy, where gathering
        # them from each group's row cost several times more
        means = means.T.contiguous()  # (m, G)
        cov = cov.reshape(-1, size * size).T.contiguous()  # (m m, G)
        own = cov[:: size + 1]  # (m, G): the diagonals
        mu = means.index_select(0, first) - means.index_select(0, second)  # (T, G)
        var = own.index_select(0, first) + own.index_select(0, second)
        var.sub_(cov.index_select(0, first * size + second), alpha=2.0)
        valid = second[:, None] < sizes  # a < b inside the group: a is inside too
        return GroupPairs(first, second, mu, var.clamp_min_(0.0), valid)

    def group_marginals(
        self,
        groups: slice | Tensor = slice(None),
        shrink: BlockShrink | None = None,
        local_maps: Tensor | None = None,
        dtype: torch.dtype | None = None,
    ) -> GroupMarginals:
        """The marginal mean and covariance of the groups in `groups` (a slice, default all,
        or a long index), padded to the largest group: `A_g m_w + b_g` and
        `P_g + A_g S_w A_g'`; the covariance under the pending tasks' believer shrink when
        `shrink` is given (MATH.md §4, §6). `local_maps` is `self.local_maps(shrink, dtype)`,
        when the caller keeps it across calls. In `dtype` when given: a screen that only
        ranks reads the blocks in single precision, half the memory traffic."""
        load, offset, within = self.load, self.offset, self.within
        if self._reads_single(dtype):
            load, offset, within = self.single()
        dtype = dtype or self.within.dtype
        context = take(self.group_context, groups).clamp_min(0)
        cov, rows = take(within, groups), take(load, groups)
        if self.n_local and cov.shape[0]:
            if local_maps is None:
                local_maps = self.local_maps(shrink, dtype)
            product = self._times_context_maps(rows, context, local_maps.to(dtype), groups)
            spread = product[:, :, :-1]
            cov = torch.baddbmm(cov, spread, spread.transpose(1, 2))
            mean = product[:, :, -1] + take(offset, groups)
        else:
            cov = cov.clone()  # the shrink below must not write into the posterior's blocks
            mean = self._group_means(groups, dtype, context, rows)
        if shrink is not None and shrink.groups.numel():
            if isinstance(groups, slice):
                start, stop, _ = groups.indices(self.n_groups)
                lo, hi = torch.searchsorted(
                    shrink.groups, torch.tensor([start, stop], device=shrink.groups.device)
                ).tolist()
                if hi > lo:
                    cov[shrink.groups[lo:hi] - start] -= shrink.correction[lo:hi].to(dtype)
            else:
                # `in_sorted`, keeping the positions it finds
                at = torch.searchsorted(shrink.groups, groups)
                at.clamp_(max=shrink.groups.numel() - 1)
                hit = torch.nonzero(shrink.groups.index_select(0, at) == groups).flatten()
                if hit.numel():
                    # `cov[hit] -= ...` (hit holds no repeats): a - b, as a + (-1) b, exactly
                    part = shrink.correction.index_select(0, at.index_select(0, hit))
                    cov.index_add_(0, hit, part.to(dtype), alpha=-1)
        return GroupMarginals(take(self.members, groups), mean.to(dtype), cov)

    def directions(self, first: Tensor, second: Tensor) -> Directions:
        """Where B directions a_b (pairs, or single clips where second = -1) live: their parts
        in groups (`Directions`) and their rows of A embedded in the D weights.

        Raises:
            ValueError: a pair across groups while `across_groups` is off.
        """
        single = second == NO_SECOND
        other = torch.where(single, first, second)
        group = self.group.index_select(0, first)
        across = group != self.group.index_select(0, other)
        any_across, any_single = torch.stack((across, single)).any(1).tolist()
        n_directions = first.shape[0]
        owner = torch.arange(n_directions, device=first.device)
        dtype = self.offset.dtype
        if not (any_across or any_single):
            return self._pair_directions(first, other, group, owner)
        pair = (~single).to(dtype)
        sign = torch.ones_like(pair)
        if any_across:
            if not self.across_groups:
                raise ValueError("a direction pairs clips of two groups")
            # a pair across groups: its first clip alone, then its second alone with sign -1
            pair = torch.cat((pair * ~across, pair.new_zeros(int(across.sum()))))
            sign = torch.cat((sign, -sign.new_ones(int(across.sum()))))
            other = torch.cat((torch.where(across, first, other), other[across]))
            first = torch.cat((first, other[n_directions:]))
            owner = torch.cat((owner, owner[across]))
            group = self.group.index_select(0, first)
        slot_i, slot_j = self.slot.index_select(0, first), self.slot.index_select(0, other)
        all_pairs = not (any_across or any_single)
        second_rows = self.load[group, slot_j]
        rows = self.load[group, slot_i] - (
            second_rows if all_pairs else second_rows * pair[:, None]
        )
        if owner.shape[0] != n_directions:
            rows = rows * sign[:, None]  # -1 only on the second parts of pairs across groups
        parts = rows.new_zeros(first.shape[0], self.n_weights)
        if self.n_local:
            parts.scatter_add_(1, self.local_index(self.group_context.index_select(0, group)), rows)
        embedded = parts
        if owner.shape[0] != n_directions:  # two parts for a pair across groups: sum them
            embedded = parts.new_zeros(n_directions, self.n_weights).index_add_(0, owner, parts)
        return Directions(owner, group, slot_i, slot_j, pair, sign, embedded, all_pairs)

    def _pair_directions(
        self, first: Tensor, second: Tensor, group: Tensor, owner: Tensor
    ) -> Directions:
        """`directions` where every direction is a pair within its group, `a = e_i - e_j`:
        one part each, the rows read by clip position (`flat_slots`), the same values in
        fewer calls (no factor `pair` or `sign` to apply: both are 1)."""
        flat = self.flat_slots()
        flat_i, flat_j = flat.index_select(0, first), flat.index_select(0, second)
        slot_i, slot_j = self.slot.index_select(0, first), self.slot.index_select(0, second)
        n_groups, width, n_local = self.load.shape
        load = self.load.reshape(n_groups * width, n_local)
        rows = load.index_select(0, flat_i) - load.index_select(0, flat_j)
        parts = rows.new_zeros(first.shape[0], self.n_weights)
        if self.n_local:
            # a clip's group has a context (>= 0): its row of the table, no wrap needed
            table = self._local_table_of(first.device)[0]
            local = table.index_select(0, self.group_context.index_select(0, group))
            parts.scatter_add_(1, local, rows)
        ones = rows.new_ones(first.shape[0])  # pair and sign, read only
        return Directions(
            owner, group, slot_i, slot_j, ones, ones, parts, True, flat_i=flat_i, flat_j=flat_j
        )

    def joint(self, first: Tensor, second: Tensor) -> JointProjections:
        """The joint Gaussian of B projections z_b = a_b . theta, read by columns."""
        return JointProjections(self, self.directions(first, second))

    def joint_moments(self, first: Tensor, second: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The joint Gaussian of B projections z_b = a_b . theta: mean (B,), covariance (B, B),
        and the border's share of the covariance `E S_w E'` (B, B) (E the directions' rows of
        A in the weights). Parts in one group add their P_g terms: `a_b' P_g a_c`."""
        joint = self.joint(first, second)
        everything = torch.arange(first.shape[0], device=first.device)
        cov = joint.columns(everything)
        weight = joint.through @ joint.where.embedded.T
        return joint.mean, 0.5 * (cov + cov.T), weight

    def sample_items(self, n_samples: int, generator: torch.Generator) -> Tensor:
        """(n_samples, n) draws of the clips' qualities from the posterior, in its conditional
        form: `w ~ N(m_w, S_w)`, then `f_g | w ~ N(A_g w + b_g, P_g)` per group (MATH.md §6).

        Args:
            n_samples: how many joint draws.
            generator: the source of every normal drawn (seed it for a repeatable draw).

        Returns:
            (n_samples, n) draws, clips in index order.

        Raises:
            torch.linalg.LinAlgError: S_w or a group's P_g is not positive definite.
        """
        draws = self.sample_groups(n_samples, generator)  # (S, G, M)
        size = self.members.shape[1]
        return draws.reshape(n_samples, -1)[:, self.group * size + self.slot]

    def draw_factors(self) -> DrawFactors:
        """The factors `sample_groups` draws with: the Cholesky factors of S_w and of every
        group's P_g, made once for many calls.

        Raises:
            torch.linalg.LinAlgError: S_w or a group's P_g is not positive definite.
        """
        like = self.weight_mean
        weight = torch.linalg.cholesky(self.weight_cov) if self.n_weights else self.weight_cov
        # slots past a group's size hold zeros; a unit variance there keeps the factor defined,
        # and the draws in those slots are never read
        padding = torch.diag_embed((self.members < 0).to(like.dtype))  # G x M x M
        return DrawFactors(weight, torch.linalg.cholesky(self.within + padding))

    def sample_groups(
        self, n_samples: int, generator: torch.Generator, factors: DrawFactors | None = None
    ) -> Tensor:
        """(n_samples, G, M) draws of the clips' qualities by group and slot, the very draws
        `sample_items` makes from the same generator state (the same normals in the same
        order): `w ~ N(m_w, S_w)`, then `f_g | w ~ N(A_g w + b_g, P_g)` (MATH.md §6). Slots
        past a group's size hold values never to be read. `factors`: `draw_factors()`, when
        the caller draws many times from one state."""
        like = self.weight_mean
        if factors is None:
            factors = self.draw_factors()
        n_weights = self.n_weights
        weights = like.new_zeros(n_samples, n_weights)
        if n_weights:
            noise = torch.randn(
                n_samples, n_weights, generator=generator, dtype=like.dtype, device=like.device
            )
            weights = self.weight_mean + noise @ factors.weight.T  # n_samples x D
        local = self.local_index(self.group_context.clamp_min(0))  # G x 2K
        loads = torch.einsum("gmk,sgk->sgm", self.load, weights[:, local])  # S x G x M
        noise = torch.randn(
            n_samples,
            self.n_groups,
            self.members.shape[1],
            generator=generator,
            dtype=like.dtype,
            device=like.device,
        )
        return loads + self.offset + torch.einsum("gmj,sgj->sgm", factors.within, noise)

    def weight_moments(self) -> tuple[Tensor, Tensor]:
        """The border: `(m_w, S_w)` over the D weights."""
        return self.weight_mean.clone(), self.weight_cov.clone()

    def to_dense(self) -> Posterior:
        """The same Gaussian as an `engine.state.Posterior` (theta = [f | w | contexts]):
        O((n + D)^2) memory, for small campaigns and tests."""
        n, d = self.n_items, self.n_weights
        rows = self.load[self.group, self.slot]  # (n, 2K)
        embed = rows.new_zeros(n, d)  # rows of A in the full weight coordinates
        if self.n_local:
            embed.scatter_add_(1, self.local_index(self.context), rows)
        cross = embed @ self.weight_cov  # Cov(f, w)
        within = rows.new_zeros(n, n)
        if n:
            partners = self.members[self.group]  # (n, M): each clip's group's members by slot
            valid = partners >= 0
            clip = torch.arange(n, device=rows.device)[:, None].expand_as(partners)
            within[clip[valid], partners[valid]] = self.within[self.group, self.slot][valid]
        item_cov = within + cross @ embed.T
        offset = self.offset[self.group, self.slot]
        mean = torch.cat((embed @ self.weight_mean + offset, self.weight_mean))
        cov = torch.cat(
            (torch.cat((item_cov, cross), 1), torch.cat((cross.T, self.weight_cov), 1)), 0
        )
        return Posterior(mean, 0.5 * (cov + cov.T), n, self.n_criteria, self.n_contexts, self.extra)


_IDENTITY: dict[tuple[int, torch.dtype, torch.device], Tensor] = {}


def _identity(size: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The (size, size) identity, made once per size, dtype and device (read only)."""
    key = (size, dtype, device)
    eye = _IDENTITY.get(key)
    if eye is None:
        eye = torch.eye(size, dtype=dtype, device=device)
        _IDENTITY[key] = eye
    return eye


class JointProjections:
    """The joint Gaussian of B projections z_b = a_b . theta (`GroupedPosterior.joint`): the
    means, the variances and the border's share of them at once, covariance columns on demand
    (a believer loop over a few picks reads a few columns, not the B x B matrix).

    Attributes:
        where: the directions' parts (`Directions`).
        mean, var: (B,) E z_b and Var z_b.
        weight_var: (B,) the border's share of Var z_b, r_b' S_w r_b.
        through: (B, D) S_w r_b.
        u: (parts, M) P_g a_p over each part's group's slots.
        slots: (parts, M) a_p over its group's slots: `a_q' P_g a_p` is `u_p . slots_q`.
    """

    def __init__(self, posterior: GroupedPosterior, where: Directions) -> None:
        self.where = where
        n_directions = where.embedded.shape[0]
        self.split = where.owner.shape[0] != n_directions  # some pair across groups
        group, si, sj, pair, sign = where.group, where.slot_i, where.slot_j, where.pair, where.sign
        self.through = where.embedded @ posterior.weight_cov
        self.weight_var = (self.through * where.embedded).sum(-1)
        within, offset = posterior.within, posterior.offset
        if where.flat_i is not None and where.flat_j is not None:
            # pairs within groups, read by clip position (`GroupedPosterior._pair_directions`):
            # each a_p is a difference of two rows of the identity
            eye = _identity(within.shape[1], within.dtype, within.device)
            self.slots = eye.index_select(0, si) - eye.index_select(0, sj)
            flat_offset = offset.reshape(-1)
            offsets = flat_offset.index_select(0, where.flat_i) - flat_offset.index_select(
                0, where.flat_j
            )
            rows = within.reshape(within.shape[0] * within.shape[1], within.shape[2])
            self.u = rows.index_select(0, where.flat_i) - rows.index_select(0, where.flat_j)
        else:
            self.slots = within.new_zeros(group.shape[0], within.shape[1])
            self.slots.scatter_(1, si[:, None], 1.0)
            self.slots.scatter_add_(1, sj[:, None], -pair[:, None])
            if where.all_pairs:  # a = e_i - e_j throughout: no factor `pair` to apply
                offsets = offset[group, si] - offset[group, sj]
                self.u = within[group, si] - within[group, sj]
            else:
                offsets = offset[group, si] - offset[group, sj] * pair
                self.u = within[group, si] - within[group, sj] * pair[:, None]
        if self.split:  # signs are -1 only on the second parts of pairs across groups
            offsets, self.u = sign * offsets, self.u * sign[:, None]
            self.slots.mul_(sign[:, None])
        own = (self.u * self.slots).sum(-1)  # a_p' P_g a_p
        mean = where.embedded @ posterior.weight_mean
        if self.split:  # a pair across groups: its two parts add (they share no group)
            self.mean = mean.index_add_(0, where.owner, offsets)
            own = own.new_zeros(n_directions).index_add_(0, where.owner, own)
        else:
            self.mean = mean + offsets
        self.var = (self.weight_var + own).clamp_min(0.0)

    def columns(self, index: Tensor) -> Tensor:
        """(B, C) `Cov(z_b, z_c)` for the C directions `index`."""
        where = self.where
        border = self.through @ where.embedded.index_select(0, index).T
        if self.split:
            lookup = index.new_full((where.embedded.shape[0],), -1)
            lookup[index] = torch.arange(index.shape[0], device=index.device)
            take = torch.nonzero(lookup[where.owner] >= 0).flatten()
            column_of = lookup[where.owner[take]]
        else:
            take = index
        same = where.group[:, None] == where.group.index_select(0, take)[None, :]
        parts = (self.u @ self.slots.index_select(0, take).T).mul_(same)
        if self.split:
            rows = parts.new_zeros(where.embedded.shape[0], take.shape[0])
            rows.index_add_(0, where.owner, parts)
            parts = rows.new_zeros(rows.shape[0], index.shape[0]).index_add_(1, column_of, rows)
        return border + parts

    def cross(self, other: JointProjections) -> Tensor:
        """(B, C) `Cov(z_b, y_c)` with another set of C projections of the same posterior in
        the same state: the border's share, plus `a_q' P_g a_p` for parts in one group."""
        mine, theirs = self.where, other.where
        border = self.through @ theirs.embedded.T
        same = mine.group[:, None] == theirs.group[None, :]
        parts = (self.u @ other.slots.T).mul_(same)
        if self.split:  # a pair across groups: its two parts add
            rows = border.shape[0]
            parts = parts.new_zeros(rows, parts.shape[1]).index_add_(0, mine.owner, parts)
        if other.split:
            parts = parts.new_zeros(border.shape).index_add_(1, theirs.owner, parts)
        return border + parts


def grouped_prior(
    scores: Tensor,
    context: Tensor,
    group: Tensor,
    n_contexts: int,
    prior: PriorScales,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
    features: Tensor | None = None,
) -> GroupedPosterior:
    """The prior over `scores`' clips (standardised, NaN where missing) in their contexts and
    groups: `engine.state`'s prior (`empty_posterior`, `add_contexts`, `add_items`) in
    conditional form; with `features` (n, D), the feature gate's vec(W) first (MATH.md §8)."""
    posterior = GroupedPosterior(scores.shape[1], prior, device=device, dtype=dtype)
    posterior.add_contexts(n_contexts, prior)
    if features is not None:
        like = posterior.weight_mean
        variances = gate_variances(scores.shape[1], features.shape[1], prior.gate_sd, like)
        posterior.grow_block(GATE, variances, local=True)
    posterior.add_items(scores, context, group, prior, features)
    return posterior


def block_shrink(
    posterior: GroupedPosterior,
    pending: Pending | None,
    pair_cuts: Tensor,
    level_cuts: Tensor | None,
) -> BlockShrink | None:
    """The pending tasks' believer shrink (MATH.md §4) in block form, exactly: None when
    nothing is pending. `c_q = sum_p U_pq S a_p` (`shrink_coefficients`); S a_p is
    `A_h S_w r_p` on a group h, plus `P_h a_p` on the task's own group."""
    if pending is None or len(pending) == 0:
        return None
    joint = posterior.joint(pending.first, pending.second)
    cov = joint.columns(torch.arange(len(pending), device=pending.first.device))
    gram = 0.5 * (cov + cov.T)
    coefficients_np, factor_np = shrink_coefficients(
        gram.cpu().numpy(), joint.mean.tolist(), pending, pair_cuts, level_cuts
    )
    coefficients = torch.from_numpy(coefficients_np).to(gram)
    factor = torch.from_numpy(factor_np).to(gram)
    where = joint.where
    border = joint.through.T @ coefficients  # (D, Q): Omega = S_w E' U (S_w symmetric)
    weight = (border * factor) @ border.T
    groups, slot_group = torch.unique(where.group, return_inverse=True)
    size = posterior.members.shape[1]
    u = joint.u  # (parts, M): P_h a_p over the part's group's slots
    own = u.new_zeros(groups.shape[0], size, coefficients.shape[1])  # (H, M, Q): v_hq
    # a pair across groups adds to both groups' own terms; the coupling of the two groups'
    # blocks is not kept (the factorised form keeps each group's block only)
    by_part = coefficients[where.owner] if joint.split else coefficients  # owner: 0..Q-1 else
    own.index_add_(0, slot_group, u[:, :, None] * by_part[:, None, :])
    # `local_index` of the groups' contexts (H, 2K): a group holding a task has a context
    table = posterior._local_table_of(groups.device)[0]
    local = table.index_select(0, posterior.group_context.index_select(0, groups))
    # (H, M, Q): A_h Omega_q
    local_border = border.index_select(0, local.reshape(-1)).reshape(*local.shape, border.shape[1])
    through = torch.bmm(posterior.load.index_select(0, groups), local_border)
    # T F V' + V F T' + V F V' = (T + V) F V' + V F T', T = through, V = own, F = diag(k)
    scaled_own = own * factor
    correction = torch.baddbmm(
        torch.bmm(scaled_own, through.transpose(1, 2)), through + own, scaled_own.transpose(1, 2)
    )
    return BlockShrink(weight, groups, correction, coefficients, factor, joint)


def refine_grouped(
    prior: GroupedPosterior,
    events: Events,
    *,
    max_sweeps: int = 50,
    damping: float = 1.0,
    tolerance: float = TOLERANCE,
    likelihood: str = "interval",
) -> tuple[GroupedPosterior, Sites, int, float]:
    """`engine.ep.ep_refine` in block form: the EP posterior of `prior` (left unchanged) x the
    events' likelihoods, its sites, the sweeps run and the last largest site change.

    Raises:
        ValueError: bad damping or sweep count, or a pair across groups.
        RuntimeError: not converged within `max_sweeps`.
    """
    posterior = prior.copy()
    sites, sweeps, change = ep_sweeps(
        posterior,
        events,
        max_sweeps=max_sweeps,
        damping=damping,
        tolerance=tolerance,
        likelihood=likelihood,
    )
    return posterior, sites, sweeps, change


__all__ = [
    "BlockShrink",
    "Directions",
    "DrawFactors",
    "GroupMarginals",
    "GroupPairs",
    "GroupedPosterior",
    "JointProjections",
    "block_shrink",
    "grouped_prior",
    "refine_grouped",
]
