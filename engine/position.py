"""Position bias: raters favour a side, and each comparison says which clip was shown left.

docs/MATH.md §7. A rater r perceives `f_left - f_right + o_r`, with the side offset
`o_r = b + d_r`: a global offset `b ~ N(0, global_sd^2)` shared by every rater and the rater's
own `d_r ~ N(0, rater_sd^2)`, so a rater with few labels is shrunk toward the global offset.
b is the border's extra block "side" (engine.blocks), among every prompt group's local
coordinates in the block form, so it stays exact there; the d_r are the block
"side:raters", by slot, a rater's slot given on their first comparison with a recorded side,
and the block form reaches them by its projected step (docs/MATH.md §6-7). A comparison
of `first` against `second` with `first` shown left is the interval event on

    z = f_first - f_second + b + d_r        (first shown left)
    z = f_first - f_second - b - d_r        (first shown right)

a direction with a border part (engine.update.Events). An anonymous rater loads on b alone.
`Campaign.fit_prior` refits rater_sd by EM from the posterior offsets (`refit_rater_sd`).
Selection leaves the side part out of a candidate pair's gain: the page draws the side at
random after the pair is chosen, so the offset adds symmetric noise that the choice does not
depend on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from engine.blocks import Layout
from engine.update import BorderPart

SIDE = "side"  # the border block [b]
SIDE_RATERS = "side:raters"  # the border block [d_0, d_1, ...]


@dataclass(frozen=True)
class SideBias:
    """The side offsets' prior (latent units, as clip quality).

    Attributes:
        global_sd: sd of the offset b that every rater shares.
        rater_sd: sd of a rater's own offset d_r around b.
    """

    global_sd: float = 0.5
    rater_sd: float = 0.3

    def __post_init__(self) -> None:
        for name in ("global_sd", "rater_sd"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be finite and > 0, got {value}")

    def global_variance(self, like: Tensor) -> Tensor:
        """(1,) the prior variance of b."""
        return like.new_full((1,), self.global_sd**2)

    def rater_variances(self, n_raters: int, like: Tensor) -> Tensor:
        """(n_raters,) the prior variances of their d_r."""
        return like.new_full((n_raters,), self.rater_sd**2)


def side_part(layout: Layout, slot: int | None, first_left: bool) -> BorderPart:
    """The border part of a comparison whose `first` clip was shown left (or right), by the
    rater in side slot `slot` (None: anonymous, the global offset alone)."""
    start = layout[SIDE].start
    sign = 1.0 if first_left else -1.0
    if slot is None:
        return [start], [sign]
    return [start, layout[SIDE_RATERS].start + slot], [sign, sign]


@dataclass(frozen=True)
class SideOffsets:
    """The side offsets' posterior: positive favours the clip shown left.

    Attributes:
        global_mean, global_sd: b.
        rater_mean, rater_sd: per rater with a slot, `b + d_r`.
    """

    global_mean: float
    global_sd: float
    rater_mean: dict[object, float]
    rater_sd: dict[object, float]


def side_offsets(
    layout: Layout, mean: Tensor, cov: Tensor, slots: dict[object, int]
) -> SideOffsets:
    """The posterior of b and of each rater's `b + d_r`, from the border's Gaussian."""
    b, first = layout[SIDE].start, layout[SIDE_RATERS].start
    raters = list(slots)
    index = torch.tensor([first + slots[r] for r in raters], dtype=torch.long)
    rater_mean = mean[b] + mean[index]
    rater_var = cov[b, b] + cov[index, index] + 2 * cov[index, b]
    return SideOffsets(
        float(mean[b]),
        float(cov[b, b].clamp_min(0).sqrt()),
        dict(zip(raters, rater_mean.tolist(), strict=True)),
        dict(zip(raters, rater_var.clamp_min(0).sqrt().tolist(), strict=True)),
    )


def rater_offset_moments(
    layout: Layout, mean: Tensor, cov: Tensor, n_slots: int
) -> tuple[Tensor, Tensor]:
    """(R,) posterior means and variances of the raters' own offsets d_r, slots 0..R-1, from
    the border's Gaussian."""
    first = layout[SIDE_RATERS].start
    index = torch.arange(first, first + n_slots, device=mean.device)
    return mean[index], torch.diagonal(cov)[index].clamp_min(0.0)


def refit_rater_sd(means: Tensor, variances: Tensor) -> float:
    """`rater_sd^2 = (1/R) sum_r (E[d_r]^2 + Var d_r)`: one EM step for the prior variance of
    the raters' own offsets, the posterior's second moments of d_r averaged over the raters
    (docs/MATH.md §7, "refitting rater_sd").

    Raises:
        ValueError: no rater.
    """
    if means.numel() == 0:
        raise ValueError("refitting rater_sd needs at least one rater with a recorded side")
    return float(torch.sqrt((means.square() + variances).mean()))


__all__ = [
    "SIDE",
    "SIDE_RATERS",
    "SideBias",
    "SideOffsets",
    "rater_offset_moments",
    "refit_rater_sd",
    "side_offsets",
    "side_part",
]
