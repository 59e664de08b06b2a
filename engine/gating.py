"""Prompt-feature gating: criterion weights that vary linearly with a clip's feature vector.

docs/MATH.md §8. A clip (or its prompt) carries features p (D numbers, e.g. a reduced text
embedding) and its quality is

    f_i = s_i' (w + u_{c_i} + W p_i) + r_i,    vec(W) ~ N(0, gate_scale^2 I_{K D})

so the weights at features p are w(p) = w + W p: the global weights plus a linear gate. Since
`s_i' W p_i = vec(W)' (p_i kron s_i)` (vec stacks W's columns), vec(W) is one more named border
block, "gate" (engine.blocks), on which clip i's prior loads with coefficients `p_i kron s_i`;
position `d K + k` of the block is W[k, d]. One-hot features p = e_c make column c of W a
context offset: the context model is the special case (MATH.md §8 states the correspondence).

The block is made before any clip (every clip's prior loads on it) and is among every prompt
group's local coordinates in the block form (engine.structured), so both forms stay exact.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from engine.blocks import GATE, WEIGHTS, Layout, context_block


def gate_loadings(scores: Tensor, features: Tensor) -> Tensor:
    """`p_b kron s_b` per clip: its prior's coefficients on vec(W) (MATH.md §8, eq. (8.1)).

    Args:
        scores: (B, K) standardised scores, missing ones already imputed (0).
        features: (B, D) feature vectors.

    Returns:
        (B, D K) with entry `d K + k` = `p_bd s_bk`.
    """
    n_new = scores.shape[0]
    width = features.shape[1] * scores.shape[1]
    return (features.to(scores)[:, :, None] * scores[:, None, :]).reshape(n_new, width)


def check_features(features: object, n_new: int, feature_dim: int, like: Tensor) -> Tensor:
    """The clips' feature vectors as a (B, D) tensor; None gives zeros (the gate adds nothing:
    w(0) = w).

    Raises:
        ValueError: features for a campaign without a gate, a row of the wrong length, a count
            that disagrees with the clips, or a value that is NaN or infinite.
    """
    if features is None:
        return like.new_zeros(n_new, feature_dim)
    if feature_dim == 0:
        raise ValueError("this campaign has no feature gate (CampaignConfig.feature_dim = 0)")
    if isinstance(features, Tensor):
        values = features.to(like).clone()  # the history keeps it: never the caller's memory
    else:
        rows = [[float(v) for v in row] for row in features]  # type: ignore[union-attr]
        if any(len(row) != feature_dim for row in rows):
            raise ValueError(f"every clip's feature vector needs {feature_dim} numbers")
        values = like.new_tensor(rows).reshape(-1, feature_dim)
    if values.dim() != 2 or values.shape[1] != feature_dim:
        raise ValueError(f"features must have shape (clips, {feature_dim})")
    if values.shape[0] != n_new:
        raise ValueError(f"{values.shape[0]} feature vectors for {n_new} clips")
    if not bool(torch.isfinite(values).all()):
        raise ValueError("feature vectors must be finite (no NaN or infinity)")
    return values


def gate_weights(
    layout: Layout, mean: Tensor, cov: Tensor, features: Tensor, context: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The weights at features p, `w(p) = w + W p`, plus context c's offsets `u_c` when
    `context` is given, under the border's Gaussian: their mean (B, K) and covariance
    (B, K, K) (MATH.md §8).

    Args:
        layout: the border's named blocks (from 0), with a "gate" block.
        mean, cov: the border's (D_border,) mean and (D_border, D_border) covariance.
        features: (B, D) feature vectors.
        context: (B,) long context indices, or None for no offsets.
    """
    weights = layout[WEIGHTS]
    n_criteria = weights.size
    gate = layout[GATE]
    feature_dim = gate.size // max(n_criteria, 1)
    n_new = features.shape[0]
    # w(p) = T_p theta_border with T_p = [I_K | p' kron I_K] on (weights, gate)
    transform = mean.new_zeros(n_new, n_criteria, mean.shape[0])
    eye = torch.eye(n_criteria, dtype=mean.dtype, device=mean.device)
    transform[:, :, weights.index] = eye
    if context is not None:
        rows = torch.arange(n_new, device=mean.device)[:, None]
        for c in torch.unique(context).tolist():  # a handful of contexts, not clips
            block = layout[context_block(int(c))]
            chosen = rows[context == c, 0]
            transform[chosen[:, None], :, block.index] = eye
    kron = features.to(mean)[:, :, None, None] * eye  # B x D x K x K: p_d I_K
    transform[:, :, gate.index] = kron.permute(0, 2, 1, 3).reshape(
        n_new, n_criteria, feature_dim * n_criteria
    )
    out_mean = transform @ mean
    out_cov = transform @ cov @ transform.transpose(1, 2)
    return out_mean, 0.5 * (out_cov + out_cov.transpose(1, 2))


def gate_columns(layout: Layout, mean: Tensor, cov: Tensor) -> tuple[Tensor, Tensor]:
    """W's columns under the border's Gaussian: `W[:, d]`, how feature d moves the K weights,
    as (D, K) posterior means and sds (vec(W) stacks the columns, MATH.md §8).

    Args:
        layout: the border's named blocks (from 0), with a "gate" block.
        mean, cov: the border's mean and covariance.
    """
    n_criteria = layout[WEIGHTS].size
    gate = layout[GATE].index
    sd = torch.diagonal(cov)[gate].clamp_min(0.0).sqrt()
    return mean[gate].reshape(-1, n_criteria), sd.reshape(-1, n_criteria)


def gate_variances(n_criteria: int, feature_dim: int, gate_scale: float, like: Tensor) -> Tensor:
    """(K D,) the prior variances of vec(W): `gate_scale^2` each (MATH.md §8)."""
    if not (gate_scale >= 0 and math.isfinite(gate_scale)):
        raise ValueError(f"gate_scale must be finite and >= 0, got {gate_scale}")
    return like.new_full((n_criteria * feature_dim,), gate_scale**2)


__all__ = [
    "GATE",
    "check_features",
    "gate_columns",
    "gate_loadings",
    "gate_variances",
    "gate_weights",
]
