"""The campaign posterior: one joint Gaussian over clip qualities and criterion weights.

MATH.md §1 writes theta = (w, u) with f_i = x_i . theta, x_i = [s_i (global and context block);
e_i]. We store the invertible linear reparametrisation theta = (f, w) instead:

    theta = [f_0 .. f_{n-1} | w_global (K) | w_context_0 (K) | ... | w_context_{C-1} (K)]

with f_i = s_i . (w_global + w_{c_i}) + u_i. Both describe the same Gaussian, and the ADF update
is equivariant under invertible linear maps, so every posterior is the same; but here a pair
observation touches two entries (a = e_i - e_j), and the clip block `cov[:n, :n]` that selection
reads is a view, not an `X S X'` product. u_i = f_i - s_i . w is recovered when needed.

A missing score is imputed by the campaign mean (0 after standardisation); its unknown
contribution w_k s_ik is folded into the residual variance, `E[w_k^2] + sigma_context^2`
(`sigma_w^2 + m_k^2 + sigma_context^2`, i.e. averaged over the criterion's standardised spread
E[s^2] = 1), so a clip with missing scores is not over-confident.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from engine.blocks import GATE, WEIGHTS, Extra, Layout, context_block, grown, theta_layout
from engine.gating import gate_loadings


@dataclass(frozen=True)
class PriorScales:
    """Prior of the linear-Gaussian model (MATH.md §1).

    Attributes:
        weight_scale: sd of each global criterion weight (standardised scores, latent units).
        context_scale: sd of each per-context offset from the global weights.
        residual_scale: sd tau of each clip's residual u_i (what the reward model misses).
        weight_mean: prior mean of the global weights; None means 0 for every criterion.
        gate_scale: sd of each entry of the feature gate W (MATH.md §8); None follows
            `context_scale`, so a unit-norm feature vector moves the weights as much a priori
            as a context does (a one-hot feature vector is a context).
    """

    weight_scale: float = 0.5
    context_scale: float = 0.25
    residual_scale: float = 1.0
    weight_mean: tuple[float, ...] | None = None
    gate_scale: float | None = None

    def __post_init__(self) -> None:
        for name in ("weight_scale", "context_scale", "residual_scale", "gate_sd"):
            value = getattr(self, name)
            if not (value >= 0 and value < float("inf")):
                raise ValueError(f"{name} must be finite and >= 0, got {value}")
        if self.residual_scale == 0:
            raise ValueError("residual_scale must be > 0: every clip needs some own variance")

    @property
    def gate_sd(self) -> float:
        """The feature gate's prior sd: `gate_scale`, or `context_scale` when unset."""
        return self.context_scale if self.gate_scale is None else self.gate_scale


QUALITY_SD = 1.5  # JOD: a typical spread of clip quality in a JOD study
REWARD_MODEL_SHARE = 0.5  # share of the quality's prior variance given to the criteria


def quality_prior(
    n_criteria: int, quality_sd: float = QUALITY_SD, share: float = REWARD_MODEL_SHARE
) -> PriorScales:
    """Scales under which a clip's quality has prior sd `quality_sd` in all (MATH.md §1, on the
    JOD scale): `K (w^2 + (w/2)^2) = share sd^2` for the K weights and context offsets (sd
    w/2), the rest residual. The total matters more than the split: information gain asks
    close pairs, which say little about the distance between far-apart clips, so under
    adaptive designs the prior's total sets the posterior's scale
    (benchmarks/results/calibration.md)."""
    if not (quality_sd > 0 and math.isfinite(quality_sd)) or not 0 <= share < 1:
        raise ValueError(f"need quality_sd > 0 and 0 <= share < 1, got {quality_sd}, {share}")
    if n_criteria == 0:
        return PriorScales(weight_scale=0.0, context_scale=0.0, residual_scale=quality_sd)
    weight = quality_sd * math.sqrt(share / (1.25 * n_criteria))
    residual = quality_sd * math.sqrt(1 - share)
    return PriorScales(weight_scale=weight, context_scale=weight / 2, residual_scale=residual)


@dataclass(frozen=True)
class Posterior:
    """`theta ~ N(mean, cov)` in the layout above.

    Attributes:
        mean: (P,) with P = n_items + n_criteria * (1 + n_contexts) + the extra blocks' sizes.
        cov: (P, P) symmetric positive semi-definite.
        n_items, n_criteria, n_contexts: block sizes.
        extra: the extra border blocks after the contexts, (name, size) in order
            (engine.blocks; a side bias, ...).
    """

    mean: Tensor
    cov: Tensor
    n_items: int
    n_criteria: int
    n_contexts: int
    extra: Extra = ()

    def __post_init__(self) -> None:
        size = self.layout.size
        if self.mean.shape != (size,) or self.cov.shape != (size, size):
            raise ValueError(
                f"posterior shapes {tuple(self.mean.shape)}, {tuple(self.cov.shape)} do not match "
                f"{self.n_items} items, {self.n_criteria} criteria, {self.n_contexts} contexts"
            )

    @property
    def layout(self) -> Layout:
        """theta's named blocks (engine.blocks): quality, weights, context:0, ..."""
        return theta_layout(self.n_items, self.n_criteria, self.n_contexts, self.extra)

    def block(self, name: str) -> tuple[Tensor, Tensor]:
        """The named block's mean and covariance (views into mean and cov)."""
        index = self.layout[name].index
        return self.mean[index], self.cov[index, index]

    @property
    def item_mean(self) -> Tensor:
        """(n,) posterior mean of the clip qualities f."""
        return self.mean[: self.n_items]

    @property
    def item_cov(self) -> Tensor:
        """(n, n) posterior covariance of f (a view into cov)."""
        return self.cov[: self.n_items, : self.n_items]

    def weight_index(self) -> Tensor:
        """(K,) positions of the global weights in theta."""
        return self.layout[WEIGHTS].positions(self.mean.device)

    def context_weight_index(self, context: Tensor) -> Tensor:
        """(..., K) positions of the per-context offsets of the given context indices (the
        context blocks follow the global weights, K each)."""
        start = self.layout[WEIGHTS].stop + self.n_criteria * context
        return start.unsqueeze(-1) + torch.arange(self.n_criteria, device=self.mean.device)


def empty_posterior(
    n_criteria: int,
    prior: PriorScales,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
) -> Posterior:
    """The prior over the global weights alone: `w ~ N(weight_mean, weight_scale^2 I)`."""
    if n_criteria < 0:
        raise ValueError(f"n_criteria must be >= 0, got {n_criteria}")
    mean = torch.zeros(n_criteria, dtype=dtype, device=device)
    if prior.weight_mean is not None:
        if len(prior.weight_mean) != n_criteria:
            raise ValueError(
                f"weight_mean has {len(prior.weight_mean)} entries for {n_criteria} criteria"
            )
        mean = mean.new_tensor(prior.weight_mean)
    cov = torch.eye(n_criteria, dtype=dtype, device=device) * prior.weight_scale**2
    return Posterior(mean, cov, n_items=0, n_criteria=n_criteria, n_contexts=0)


def add_contexts(posterior: Posterior, n_new: int, prior: PriorScales) -> Posterior:
    """Add `n_new` context offset blocks, each `N(0, context_scale^2 I)` and independent,
    after the existing contexts (before any extra border block)."""
    if n_new < 0:
        raise ValueError(f"n_new must be >= 0, got {n_new}")
    count = n_new * posterior.n_criteria
    at = (
        posterior.layout[context_block(posterior.n_contexts - 1)].stop
        if posterior.n_contexts
        else posterior.layout[WEIGHTS].stop
    )
    variances = posterior.mean.new_full((count,), prior.context_scale**2)
    mean, cov = _insert_independent(posterior.mean, posterior.cov, at, variances)
    return replace(posterior, mean=mean, cov=cov, n_contexts=posterior.n_contexts + n_new)


def grow_block(posterior: Posterior, name: str, variances: Tensor) -> Posterior:
    """Grow the extra border block `name` (made at the end of the border when new) by
    independent coordinates `N(0, variances)`: a side-bias block takes one per rater."""
    extra, offset = grown(posterior.extra, name, variances.shape[0])
    border = posterior.layout[WEIGHTS].start
    at = border + posterior.n_criteria * (1 + posterior.n_contexts) + offset
    mean, cov = _insert_independent(posterior.mean, posterior.cov, at, variances)
    return replace(posterior, mean=mean, cov=cov, extra=extra)


def _insert_independent(
    mean: Tensor, cov: Tensor, at: int, variances: Tensor
) -> tuple[Tensor, Tensor]:
    """(mean, cov) with independent zero-mean coordinates of the given variances inserted at
    position `at`."""
    count, size = variances.shape[0], mean.shape[0]
    if count == 0:
        return mean, cov
    mean = torch.cat((mean[:at], mean.new_zeros(count), mean[at:]))
    grown_cov = cov.new_zeros(size + count, size + count)
    keep = torch.cat((torch.arange(at), torch.arange(at + count, size + count))).to(cov.device)
    grown_cov[keep[:, None], keep[None, :]] = cov
    new = torch.arange(at, at + count, device=cov.device)
    grown_cov[new, new] = variances.to(cov)
    return mean, grown_cov


def add_items(
    posterior: Posterior,
    scores: Tensor,
    context: Tensor,
    prior: PriorScales,
    features: Tensor | None = None,
) -> Posterior:
    """Add B clips: `f_new = G theta_w + u_new`, conditioned exactly on everything learned so far.

    Row b of G carries s_b at the global weights and at context c_b's offsets, and
    `p_b kron s_b` at the feature gate's vec(W) when the posterior has one (MATH.md §8). u_new is
    independent of theta, so `E f_new = G m_w`, `Cov(f_new, theta) = G S_w.`, and
    `Var f_new = G S_ww G' + diag(tau_b^2)` (MATH.md §1). A new clip therefore starts from what
    the reward model, through the weights learned so far, says about it.

    Args:
        posterior: current posterior; every context in `context` must already exist.
        scores: (B, K) standardised scores, NaN where a score is missing.
        context: (B,) long context indices.
        prior: residual and weight scales (for the residual variance of missing scores).
        features: (B, D) feature vectors, when the posterior has a "gate" block (K D).

    Returns:
        The posterior with the B new clips at item positions n .. n + B - 1.
    """
    n_new, n_criteria = scores.shape[0], posterior.n_criteria
    if scores.shape != (n_new, n_criteria) or context.shape != (n_new,):
        raise ValueError(f"scores must be (B, {n_criteria}) and context (B,)")
    layout = posterior.layout
    gated = GATE in layout
    if gated != (features is not None):
        raise ValueError("features go with a posterior that has a feature gate, and only then")
    if n_new and n_criteria and int(context.max()) >= posterior.n_contexts:
        raise ValueError("a clip refers to a context the posterior does not have")
    n, size = posterior.n_items, posterior.mean.numel()
    dtype, device = posterior.mean.dtype, posterior.mean.device
    missing = torch.isnan(scores)
    filled = torch.where(missing, torch.zeros_like(scores), scores)

    # G over the whole theta (B x P); zero on the existing items.
    design = scores.new_zeros(n_new, size)
    if n_criteria:
        rows = torch.arange(n_new, device=device).unsqueeze(-1)
        design[rows, posterior.weight_index()] = filled
        design[rows, posterior.context_weight_index(context)] += filled
    if features is not None:
        features = features.to(scores)
        if features.shape[0] != n_new or layout[GATE].size != features.shape[1] * n_criteria:
            raise ValueError(f"features must be (B, D) with D K = {layout[GATE].size}")
        design[:, layout[GATE].index] = gate_loadings(filled, features)  # MATH.md eq. (8.1)
    cross = design @ posterior.cov  # B x P: Cov(f_new, theta)
    new_mean = design @ posterior.mean
    weight_second_moment = posterior.mean[n : n + n_criteria].square()
    if n_criteria:
        weight_second_moment = (
            weight_second_moment + torch.diagonal(posterior.cov)[n : n + n_criteria]
        )
    missing_var = (missing.to(dtype) * (weight_second_moment + prior.context_scale**2)).sum(-1)
    if features is not None:
        # a missing score's gate term s_k (W p)_k: E[(W p)_k^2] = gate_sd^2 |p|^2 (MATH.md §8)
        missing_var = missing_var + missing.to(dtype).sum(-1) * gate_missing_variance(
            features, prior
        )
    residual_var = prior.residual_scale**2 + missing_var
    new_block = cross @ design.T + torch.diag(residual_var)

    # Insert the new items after the existing ones, before the weights.
    order = torch.cat(
        (
            torch.arange(n, device=device),
            torch.arange(size, size + n_new, device=device),
            torch.arange(n, size, device=device),
        )
    )
    mean = torch.cat((posterior.mean, new_mean))[order]
    cov = torch.empty(size + n_new, size + n_new, dtype=dtype, device=device)
    cov[:size, :size] = posterior.cov
    cov[size:, :size] = cross
    cov[:size, size:] = cross.T
    cov[size:, size:] = 0.5 * (new_block + new_block.T)
    cov = cov[order][:, order]
    return replace(posterior, mean=mean, cov=cov, n_items=n + n_new)


def gate_missing_variance(features: Tensor, prior: PriorScales) -> Tensor:
    """(B,) `gate_sd^2 |p_b|^2`: the prior variance of one criterion's gate weight (W p_b)_k,
    which a missing score's term adds to the residual (MATH.md §8)."""
    return prior.gate_sd**2 * features.square().sum(-1)


__all__ = [
    "QUALITY_SD",
    "Posterior",
    "PriorScales",
    "add_contexts",
    "add_items",
    "empty_posterior",
    "gate_missing_variance",
    "grow_block",
    "quality_prior",
]
