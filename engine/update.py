"""The one assumed-density-filtering update: posterior + interval events -> posterior.

For an event on `z = a . theta` with moments (log_z, dlog_z, d2log_z) of the likelihood under
`z ~ N(a.m, a.S.a)` (MATH.md §2):

    m' = m + S a dlog_z
    S' = S + (S a)(S a)' d2log_z        (d2log_z = -(1 - kappa) / c^2 <= 0)

Every observation here projects on one clip (a = e_i, an emoji level) or a pair
(a = e_i - e_j, a comparison), plus an optional border part c on a few border coordinates
(a = e_i - e_j + c: a side bias, docs/MATH.md §7), so S a is a sum of a few columns of S.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
from torch import Tensor

from engine.likelihoods import (
    LIKELIHOODS,
    SCALAR_LIKELIHOODS,
    MomentFunction,
    Moments,
    Outcome,
    lapse_mixture,
    lapse_mixture_scalar,
    level_interval,
    pair_interval,
)
from engine.questions import NO_SECOND
from engine.state import Posterior

BorderPart = tuple[list[int], list[float]]  # positions on the border, their coefficients
# a cavity precision at or below this is flat: the site holds all of its direction's information
MIN_CAVITY_PRECISION = 1e-12
# events up to which `Events` checks its fields in Python numbers (a label's few events), where
# a torch call per check costs more than the comparisons
FEW_EVENTS = 16


@dataclass(frozen=True)
class Sites:
    """Natural parameters of B Gaussian sites on the events' projections z_b = a_b . theta,
    `site_b(z) ∝ exp(-tau_b z^2 / 2 + nu_b z)`: precision tau (B,) and shift nu (B,)."""

    precision: Tensor
    shift: Tensor


def adf_site(mu: float, var: float, dlog_z: float, d2log_z: float) -> tuple[float, float]:
    """The Gaussian site an ADF step multiplied the posterior by (MATH.md §2, eq. (2.1)):
    `tau = -d2log_z / (1 + var d2log_z)`, `nu = (dlog_z - mu d2log_z) / (1 + var d2log_z)`,
    from the step's cavity marginal (mu, var) and its moments. The step's posterior
    marginal is then `1 / var' = 1 / var + tau`, `mu' / var' = mu / var + nu`.

    Valid wherever the step is (var' = var (1 + var d2log_z) > 0); tau < 0 for a lapse
    mixture's step that widens the posterior."""
    denominator = 1.0 + var * d2log_z
    return -d2log_z / denominator, (dlog_z - mu * d2log_z) / denominator


def cavity_moments(mu: Tensor, var: Tensor, sites: Sites) -> tuple[Tensor, Tensor]:
    """Each event's leave-one-out marginal: `N(mu, var)` with its own site divided out,
    `var_-b = 1 / (1 / var - tau_b)`, `mu_-b = var_-b (mu / var - nu_b)` (MATH.md §2,
    eq. (2.2)). Exact for a dense posterior that is prior x sites (ADF or EP); a cavity
    precision at or below MIN_CAVITY_PRECISION is taken as that flat floor.

    Args:
        mu, var: (B,) the events' marginals under the posterior that holds their sites.
        sites: the B events' sites.

    Returns:
        (B,) cavity means and (B,) cavity variances.
    """
    precision = (1.0 / var.clamp_min(1e-300) - sites.precision).clamp_min(MIN_CAVITY_PRECISION)
    cavity_var = 1.0 / precision  # MATH.md eq. (2.2)
    return cavity_var * (mu / var.clamp_min(1e-300) - sites.shift), cavity_var


@dataclass(frozen=True)
class Events:
    """A batch of B interval events, applied in order.

    Attributes:
        first: (B,) long item index i.
        second: (B,) long item index j of a pair (z = f_i - f_j), or -1 (z = f_i).
        lo, hi: (B,) interval ends on the rater's noisy z.
        noise_var: (B,) the answering rater's noise variance.
        keep: (B,) probability the rater answered as the model says rather than clicking at
            random (lapse model, `likelihoods.lapse_mixture`); None means 1 for every event.
        n_outcomes: (B,) outcomes a random click chooses among (2, 3 with ties, L levels).
        border_index, border_coef: (B, P) the direction's border part c: coefficients on
            positions of the border (engine.blocks.border_layout, from 0), coefficient 0 for
            padding; None when no event has one.
        second_sign: (B,) the second clip's coefficient, -1.0 (z = f_i - f_j, a comparison) or
            +1.0 (z = f_i + f_j, where a pair stands: "both good"); None means -1 for all.
    """

    first: Tensor
    second: Tensor
    lo: Tensor
    hi: Tensor
    noise_var: Tensor
    keep: Tensor | None = None
    n_outcomes: Tensor | None = None
    border_index: Tensor | None = None
    border_coef: Tensor | None = None
    second_sign: Tensor | None = None

    def __post_init__(self) -> None:
        shape = self.first.shape
        if len(shape) != 1 or any(
            t.shape != shape for t in (self.second, self.lo, self.hi, self.noise_var)
        ):
            raise ValueError("every field of Events must be a 1-D tensor of the same length")
        if shape[0] <= FEW_EVENTS and self.first.device.type == "cpu":
            self._check_few()
        else:
            if not bool((self.lo < self.hi).all()):
                raise ValueError("every event interval needs lo < hi")
            if not bool((self.noise_var >= 0).all()) or not bool(
                torch.isfinite(self.noise_var).all()
            ):
                raise ValueError("noise variances must be finite and >= 0")
            if bool((self.first == self.second).any()):
                raise ValueError("a pair event needs two different clips")
        if (self.keep is None) != (self.n_outcomes is None):
            raise ValueError("give keep and n_outcomes together")
        if self.keep is not None and self.n_outcomes is not None:
            if self.keep.shape != shape or self.n_outcomes.shape != shape:
                raise ValueError("keep and n_outcomes need one entry per event")
            if not bool(((self.keep > 0) & (self.keep <= 1)).all()):
                raise ValueError("keep probabilities must be in (0, 1]")
            if not bool((self.n_outcomes >= 2).all()):
                raise ValueError("a random click needs at least 2 outcomes")
        if (self.border_index is None) != (self.border_coef is None):
            raise ValueError("give border_index and border_coef together")
        if self.border_index is not None and self.border_coef is not None:
            if self.border_index.shape != self.border_coef.shape or (
                self.border_index.dim() != 2 or self.border_index.shape[0] != shape[0]
            ):
                raise ValueError("border_index and border_coef must both be (B, P)")
            if bool((self.border_index < 0).any()) or not bool(
                torch.isfinite(self.border_coef).all()
            ):
                raise ValueError("border positions must be >= 0 and coefficients finite")
        if self.second_sign is not None:
            if self.second_sign.shape != shape or not bool((self.second_sign.abs() == 1).all()):
                raise ValueError("second_sign needs one entry per event, each -1 or +1")
            if bool(((self.second_sign > 0) & (self.second == NO_SECOND)).any()):
                raise ValueError("a sum direction needs two clips")

    def _check_few(self) -> None:
        """The intervals', noise variances' and clips' checks of `__post_init__` on a few
        events read back as Python numbers: the same comparisons (NaN fails `lo < hi` and
        `isfinite` alike), without a torch call per check."""
        if not all(lo < hi for lo, hi in zip(self.lo.tolist(), self.hi.tolist(), strict=True)):
            raise ValueError("every event interval needs lo < hi")
        if not all(v >= 0 and math.isfinite(v) for v in self.noise_var.tolist()):
            raise ValueError("noise variances must be finite and >= 0")
        if any(i == j for i, j in zip(self.first.tolist(), self.second.tolist(), strict=True)):
            raise ValueError("a pair event needs two different clips")

    def signs(self) -> list[float]:
        """Each event's second-clip coefficient as floats (-1.0 unless a sum direction)."""
        if self.second_sign is None:
            return [-1.0] * len(self)
        return self.second_sign.tolist()

    def border_parts(self, n_border: int) -> list[BorderPart | None]:
        """Each event's border part as (positions, coefficients), None where it has none.

        Raises:
            IndexError: a position outside the border's `n_border` coordinates.
        """
        if self.border_index is None or self.border_coef is None:
            return [None] * len(self)
        if self.border_index.numel() and int(self.border_index.max()) >= n_border:
            raise IndexError(f"a border part refers to a position outside 0..{n_border - 1}")
        parts: list[BorderPart | None] = []
        for positions, coefficients in zip(
            self.border_index.tolist(), self.border_coef.tolist(), strict=True
        ):
            kept = [(p, c) for p, c in zip(positions, coefficients, strict=True) if c != 0]
            parts.append(([p for p, _ in kept], [c for _, c in kept]) if kept else None)
        return parts

    def __len__(self) -> int:
        return self.first.shape[0]


def pair_events(
    first: Sequence[int],
    second: Sequence[int],
    outcomes: Sequence[Outcome | str],
    *,
    tie_margin: float,
    noise_sd: float | Sequence[float],
    like: Tensor,
) -> Events:
    """Events for comparisons of (first[b], second[b]) with `outcomes[b]`. MATH.md §2."""
    intervals = [pair_interval(Outcome(o), tie_margin) for o in outcomes]
    return interval_events(first, second, intervals, noise_sd, like)


def level_events(
    items: Sequence[int],
    levels: Sequence[int],
    *,
    thresholds: Sequence[float],
    noise_sd: float | Sequence[float],
    like: Tensor,
) -> Events:
    """Events for emoji levels (0 = worst) of single clips. MATH.md §2 (ordered probit)."""
    intervals = [level_interval(int(level), thresholds) for level in levels]
    return interval_events(items, [NO_SECOND] * len(items), intervals, noise_sd, like)


def interval_events(
    first: Sequence[int],
    second: Sequence[int],
    intervals: Sequence[tuple[float, float]],
    noise_sd: float | Sequence[float],
    like: Tensor,
    keep: Sequence[float] | None = None,
    n_outcomes: Sequence[float] | None = None,
    border: Sequence[BorderPart | None] | None = None,
    second_sign: Sequence[float] | None = None,
) -> Events:
    """Events on (first[b], second[b]) (second = -1: one clip) with observed `intervals`, the
    raters' noise sd (one, or one per event), for the lapse model keep probabilities and
    outcome counts, each direction's border part (or None) and each second clip's sign
    (-1 unless z = f_i + f_j). Tensors take `like`'s dtype and device."""
    count = len(intervals)
    if len(first) != count or len(second) != count:
        raise ValueError("first, second and outcomes must have the same length")
    sd = like.new_tensor(noise_sd).reshape(-1)
    if sd.numel() not in (1, count):
        raise ValueError(f"give one noise sd, or one per event ({count})")
    sd = sd.expand(count)
    bounds = like.new_tensor(intervals).reshape(count, 2)
    border_index = border_coef = None
    if border is not None and any(part is not None for part in border):
        if len(border) != count:
            raise ValueError("give one border part (or None) per event")
        width = max(len(part[0]) for part in border if part is not None)
        border_index = torch.zeros(count, width, dtype=torch.long, device=like.device)
        border_coef = like.new_zeros(count, width)
        for b, part in enumerate(border):
            if part is not None:
                positions, coefficients = part
                border_index[b, : len(positions)] = torch.as_tensor(positions)
                border_coef[b, : len(coefficients)] = like.new_tensor(coefficients)
    return Events(
        torch.tensor(list(first), dtype=torch.long, device=like.device),
        torch.tensor(list(second), dtype=torch.long, device=like.device),
        bounds[:, 0].contiguous(),
        bounds[:, 1].contiguous(),
        sd.square().contiguous(),
        None if keep is None else like.new_tensor(list(keep)).reshape(-1),
        None if n_outcomes is None else like.new_tensor(list(n_outcomes)).reshape(-1),
        border_index,
        border_coef,
        None
        if second_sign is None or all(sign == -1 for sign in second_sign)
        else like.new_tensor(list(second_sign)).reshape(-1),
    )


def event_moments(
    moment_function: MomentFunction, events: Events, b: int, mu: Tensor, var: Tensor
) -> tuple[Moments, Tensor]:
    """Moments of event b under `z ~ N(mu, var)` (lapse mixture included), and the model's
    own log Z (without the lapse), which a rater's reliability update needs."""
    moments = moment_function(mu, var, events.lo[b], events.hi[b], events.noise_var[b])
    model_log_z = moments.log_z
    if events.keep is not None and events.n_outcomes is not None and float(events.keep[b]) < 1:
        moments = lapse_mixture(moments, events.keep[b], events.n_outcomes[b])
    return moments, model_log_z


def event_moment_function(
    events: Events, likelihood: str
) -> Callable[[int, float, float], tuple[float, float, float, float]]:
    """`event_moments` in Python floats: (log Z, dlog Z, d2log Z, model log Z) of event b under
    N(mu, var), the lapse mixture included. Scalar arithmetic when the likelihood has a scalar
    form (SCALAR_LIKELIHOODS; the events' fields are read out once per batch), else the tensor
    moment function.

    Raises:
        KeyError: unknown likelihood.
    """
    moment_function = LIKELIHOODS[likelihood]
    scalar = SCALAR_LIKELIHOODS.get(likelihood)
    if scalar is None:
        like = events.lo

        def tensor_moments(b: int, mu: float, var: float) -> tuple[float, float, float, float]:
            moments, model_log_z = event_moments(
                moment_function, events, b, like.new_tensor(mu), like.new_tensor(var)
            )
            return (*(float(m) for m in moments), float(model_log_z))  # type: ignore[return-value]

        return tensor_moments
    lo, hi, noise_var = events.lo.tolist(), events.hi.tolist(), events.noise_var.tolist()
    keep = None if events.keep is None else events.keep.tolist()
    n_outcomes = None if events.n_outcomes is None else events.n_outcomes.tolist()

    def moments(b: int, mu: float, var: float) -> tuple[float, float, float, float]:
        model = scalar(mu, var, lo[b], hi[b], noise_var[b])
        mixed = model
        if keep is not None and n_outcomes is not None and keep[b] < 1:
            mixed = lapse_mixture_scalar(model, keep[b], n_outcomes[b])
        return mixed.log_z, mixed.dlog_z, mixed.d2log_z, model.log_z

    return moments


def event_items(events: Events, n_items: int) -> tuple[list[int], list[int]]:
    """The events' (first, second) as lists, checked against the clip count.

    Raises:
        IndexError: an event refers to a clip the posterior does not have.
    """
    first, second = events.first.tolist(), events.second.tolist()
    if any(not 0 <= i < n_items for i in first) or any(
        not (j == NO_SECOND or 0 <= j < n_items) for j in second
    ):
        raise IndexError(f"an event refers to a clip outside 0..{n_items - 1}")
    return first, second


def update(posterior: Posterior, events: Events, likelihood: str = "interval") -> Posterior:
    """Apply `events` one after another by ADF (MATH.md §2); the input is not modified.

    A batch is applied as B sequential rank-1 steps: one parallel rank-B step is not ADF
    (MATH.md §2: exact 0.198, sequential 0.471, one rank-2 step 1.003).

    Args:
        posterior: the current posterior.
        events: B events on its items.
        likelihood: a key of LIKELIHOODS.

    Returns:
        The posterior after all B events.

    Raises:
        KeyError: unknown likelihood.
        IndexError: an event refers to a clip the posterior does not have.
        ValueError: a degenerate event (zero noise and zero variance).
    """
    return update_with_evidence(posterior, events, likelihood).posterior


DEFERRED_STEPS = 32  # rank-1 covariance steps held before one GEMM folds them in


class AdfResult(NamedTuple):
    """The posterior, the log evidence `sum_b log Z_b`, each event's model log Z (B,), and
    the Gaussian site each step multiplied the posterior by (`adf_site`)."""

    posterior: Posterior
    log_evidence: float
    model_log_z: Tensor
    sites: Sites


def update_with_evidence(
    posterior: Posterior, events: Events, likelihood: str = "interval"
) -> AdfResult:
    """`update`, plus the log evidence of the events under ADF: `sum_b log Z_b`, each label's
    predictive probability given the labels before it (the prequential decomposition
    `log p(y) = sum_b log p(y_b | y_<b)`, every factor under the ADF Gaussian), and each
    event's predictive probability under the model alone (no lapse), and each step's site
    (`adf_site`: the posterior is the prior times them). Same errors as `update`."""
    moments = event_moment_function(events, likelihood)
    n_items = posterior.n_items
    first, second = event_items(events, n_items)
    borders = events.border_parts(posterior.mean.shape[0] - n_items)
    signs = events.signs()
    mean = posterior.mean.clone()
    cov = posterior.cov
    log_evidence = 0.0
    model_log_z = mean.new_zeros(len(first))
    site_precision = [0.0] * len(first)
    site_shift = [0.0] * len(first)
    # The rank-1 covariance steps are deferred: S_b = S + V diag(d) V' over the events since
    # the last flush, and S_b a costs O(dim * pending); every DEFERRED_STEPS events one GEMM
    # folds them in. The same sequential ADF as B addr_ calls, for about one pass over S per
    # flush instead of one per event (the update's cost at n = 1,000 is memory traffic).
    columns = cov.new_empty(cov.shape[0], min(len(first), DEFERRED_STEPS))
    scales = cov.new_empty(columns.shape[1])
    held = 0
    for b, (i, j) in enumerate(zip(first, second, strict=True)):
        border = theta_part(borders[b], n_items, mean)
        # S a for a = e_i - e_j (pair) or e_i (single clip), plus the border part
        sign = signs[b]
        column = along(cov.T, i, j, border, sign)
        if held:
            column.addmv_(
                columns[:, :held], scales[:held] * along(columns[:, :held], i, j, border, sign)
            )
        mu = along(mean, i, j, border, sign)
        var = along(column, i, j, border, sign).clamp_min(0.0)
        mu_b, var_b = float(mu), float(var)
        log_z, dlog_z, d2log_z, model_log_z[b] = moments(b, mu_b, var_b)
        if not (math.isfinite(dlog_z) and math.isfinite(d2log_z)):
            raise FloatingPointError(f"event {b} produced a non-finite update")
        log_evidence += log_z
        site_precision[b], site_shift[b] = adf_site(mu_b, var_b, dlog_z, d2log_z)
        mean.add_(column, alpha=dlog_z)  # MATH.md §2: m' = m + S a dlog_z
        # MATH.md §2: S' = S + d2log_z (S a)(S a)', held until the next flush
        columns[:, held] = column
        scales[held] = d2log_z
        held += 1
        if held == columns.shape[1] or b == len(first) - 1:
            cov = torch.addmm(cov, columns[:, :held] * scales[:held], columns[:, :held].T)
            held = 0
    if len(first) == 0:
        cov = cov.clone()
    sites = Sites(mean.new_tensor(site_precision), mean.new_tensor(site_shift))
    return AdfResult(replace(posterior, mean=mean, cov=cov), log_evidence, model_log_z, sites)


def theta_part(part: BorderPart | None, n_items: int, like: Tensor) -> tuple[Tensor, Tensor] | None:
    """A border part in the dense form's theta positions (the border follows the n clips)."""
    if part is None:
        return None
    positions, coefficients = part
    index = torch.as_tensor(positions, dtype=torch.long, device=like.device) + n_items
    return index, like.new_tensor(coefficients)


def along(
    x: Tensor, i: int, j: int, border: tuple[Tensor, Tensor] | None, sign: float = -1.0
) -> Tensor:
    """`a . x` over x's first axis for a = e_i - e_j (or e_i when j = NO_SECOND; e_i + e_j
    when `sign` is +1) plus the border part (theta positions, coefficients): a new tensor."""
    if j == NO_SECOND:
        return _with_border(x[i].clone(), x, border)
    return _with_border(x[i] - x[j] if sign < 0 else x[i] + x[j], x, border)


def _with_border(out: Tensor, x: Tensor, border: tuple[Tensor, Tensor] | None) -> Tensor:
    if border is not None:
        index, coefficients = border
        out = out + torch.tensordot(coefficients, x[index], dims=1)
    return out


__all__ = [
    "MIN_CAVITY_PRECISION",
    "AdfResult",
    "BorderPart",
    "Events",
    "Sites",
    "adf_site",
    "along",
    "cavity_moments",
    "event_items",
    "event_moment_function",
    "event_moments",
    "interval_events",
    "level_events",
    "pair_events",
    "theta_part",
    "update",
    "update_with_evidence",
]
