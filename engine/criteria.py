"""Per-criterion questions: "which of the two is better aligned / safer / ...?" (MATH.md §9).

Each clip i has, per asked criterion k, a latent value `g_ik = s_ik + v_ik` on the reward
model's standardised scale: the score plus a criterion residual `v_ik ~ N(0, residual_sd^2)`
that the reward model misses. Overall quality loads on the residuals through a fixed loading
gamma,

    f_i = s_i'(w + u_c) + gamma' v_i + r_i,

which keeps the model linear-Gaussian: with gamma = E[w] it is the Gaussian with the first
two moments of the bilinear model `f_i = w'(s_i + v_i) + r0_i` (MATH.md §9). A criterion
answer is an interval event on `g_ik - g_jk`, ties as for a pair.

The dense form stores, instead of v_ik, `t_ik = g_ik - f_i` in the extra border block
"criteria" (slot `i * n_asked + k`): an invertible linear reparametrisation, so the posterior is
the same Gaussian, and `g_ik - g_jk = (f_i - f_j) + (t_ik - t_jk)` is a pair direction with a
border part, the form engine.update, engine.ep and replay already take (as the side bias of
§7 does). The block forms do not keep these per-clip coordinates local yet: criterion
questions need the dense form.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor

from engine.blocks import Layout
from engine.objectives import expected_information_gain
from engine.state import Posterior, PriorScales, grow_block
from engine.update import BorderPart

CRITERIA = "criteria"  # the border block of the t_ik, clip-major
CriterionGain = Literal["quality", "all"]
CRITERION_GAINS = ("quality", "all")


@dataclass(frozen=True)
class CriterionQuestions:
    """Which criteria a campaign may ask about, and their model (MATH.md §9).

    Attributes:
        criteria: names among the campaign's criteria (`CampaignConfig.criteria`).
        residual_sd: sd of each criterion residual v_ik (standardised score units).
        loading: gamma, one per asked criterion; None takes the prior mean of the weights
            where the prior states one (`PriorScales.weight_mean`), else the weights' prior
            sd (`weight_scale`): a higher score is taken to be better.
        gain: what a criterion question's gain counts: "quality", what it says about the two
            clips' qualities, I(y; f_i, f_j) (a pair's gain is that quantity too); "all",
            I(y; theta), the criterion values included.
        seconds: rater seconds per criterion question (prior of the task clock).
        noise_scale: a criterion answer's noise sd (on the criteria's standardised scale)
            per unit of the rater's noise sd on quality: the values g are in score units,
            not in quality's.
    """

    criteria: tuple[str, ...]
    residual_sd: float = 0.5
    loading: tuple[float, ...] | None = None
    gain: CriterionGain = "quality"
    seconds: float = 6.0
    noise_scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.criteria:
            raise ValueError("criterion questions need at least one criterion")
        if len(set(self.criteria)) != len(self.criteria):
            raise ValueError(f"criterion names must be unique, got {self.criteria}")
        if not (self.residual_sd > 0 and math.isfinite(self.residual_sd)):
            raise ValueError(f"residual_sd must be finite and > 0, got {self.residual_sd}")
        if self.loading is not None and (
            len(self.loading) != len(self.criteria)
            or not all(math.isfinite(g) for g in self.loading)
        ):
            raise ValueError(
                f"loading needs one finite number per asked criterion ({len(self.criteria)})"
            )
        if self.gain not in CRITERION_GAINS:
            raise ValueError(f"gain is one of {CRITERION_GAINS}, got {self.gain!r}")
        if not (self.seconds > 0 and math.isfinite(self.seconds)):
            raise ValueError(f"seconds must be finite and > 0, got {self.seconds}")
        if not (self.noise_scale > 0 and math.isfinite(self.noise_scale)):
            raise ValueError(f"noise_scale must be finite and > 0, got {self.noise_scale}")

    def columns(self, all_criteria: Sequence[str]) -> list[int]:
        """Each asked criterion's column among the campaign's scores.

        Raises:
            ValueError: a criterion the campaign does not have.
        """
        missing = [c for c in self.criteria if c not in all_criteria]
        if missing:
            raise ValueError(
                f"criteria {missing} are not among the campaign's {list(all_criteria)}"
            )
        return [list(all_criteria).index(c) for c in self.criteria]

    def gamma(self, all_criteria: Sequence[str], prior: PriorScales) -> list[float]:
        """The loading gamma (see `loading`)."""
        if self.loading is not None:
            return list(self.loading)
        columns = self.columns(all_criteria)
        if prior.weight_mean is not None:
            return [prior.weight_mean[k] for k in columns]
        return [prior.weight_scale] * len(columns)

    def own_scales(
        self, all_criteria: Sequence[str], prior: PriorScales, strict: bool = True
    ) -> PriorScales:
        """The prior with the clips' own residual r_i: `tau_r^2 = tau^2 - |gamma|^2 sd_v^2`,
        so that a clip's quality has the same prior as without criterion questions.

        Args:
            all_criteria: the campaign's criteria.
            prior: the campaign's prior scales.
            strict: raise where r_i would keep less than MIN_OWN_SHARE of tau^2; False keeps
                that share instead (a refit's scales, empirical Bayes: the clip's prior is
                then a little wider than tau^2).

        Raises:
            ValueError: strict, and the loaded residuals would take too much of tau^2.
        """
        loaded = sum(g * g for g in self.gamma(all_criteria, prior)) * self.residual_sd**2
        own = prior.residual_scale**2 - loaded
        if not strict:
            own = max(own, MIN_OWN_SHARE * prior.residual_scale**2)
        if own < MIN_OWN_SHARE * prior.residual_scale**2:
            raise ValueError(
                f"the criterion residuals' share of the quality variance ({loaded:.3g}) leaves "
                f"too little of residual_scale^2 = {prior.residual_scale**2:.3g} to the clip: "
                "lower CriterionQuestions.residual_sd or the loading"
            )
        return replace(prior, residual_scale=math.sqrt(own))


# the clip's own residual keeps at least this share of its variance: a quality fully explained
# by the criteria would make a comparison a deterministic function of four criterion answers
MIN_OWN_SHARE = 0.05


def add_criterion_values(
    posterior: Posterior,
    scores: Tensor,
    columns: Sequence[int],
    loading: Sequence[float],
    residual_sd: float,
) -> Posterior:
    """Give the last B clips their criterion coordinates (MATH.md §9).

    The B clips must have been added with the own residual r_i alone (`own_scales`). Adds
    `v_bk ~ N(0, residual_sd^2)` (plus 1 where the score is missing: the unknown score is part
    of g), then maps `f_b <- f_b + gamma' v_b` and stores `t_bk = s_bk + v_bk - f_b`: one
    linear map of theta, applied as row and column operations (O(B K P)).

    Args:
        posterior: dense, its last B clips without criterion coordinates yet.
        scores: (B, K) standardised scores of those clips, NaN where missing.
        columns: (Kc,) the asked criteria's columns.
        loading: (Kc,) gamma.
        residual_sd: sd of v.

    Returns:
        The posterior with the "criteria" block grown by B * Kc.
    """
    n_new, n_asked = scores.shape[0], len(columns)
    if n_new == 0:
        return posterior
    n = posterior.n_items
    first_new = n - n_new
    held = posterior.layout[CRITERIA].size if CRITERIA in posterior.layout else 0
    if held != first_new * n_asked:
        raise ValueError(f"the criteria block holds {held} values for {first_new} clips")
    asked = scores[:, list(columns)]  # B x Kc
    missing = torch.isnan(asked)
    offset = torch.where(missing, torch.zeros_like(asked), asked)
    variances = residual_sd**2 + missing.to(asked.dtype)  # B x Kc
    posterior = grow_block(posterior, CRITERIA, variances.reshape(-1))
    start = posterior.layout[CRITERIA].start
    mean, cov = posterior.mean.clone(), posterior.cov.clone()
    clips = torch.arange(first_new, n, device=mean.device)  # B
    slots = start + clips.unsqueeze(1) * n_asked + torch.arange(n_asked, device=mean.device)
    gamma = mean.new_tensor(list(loading))  # Kc
    # f_b <- f_b + gamma' v_b: rows, then columns (L S L' with L = I + E)
    mean[clips] += mean[slots] @ gamma
    cov[clips] += torch.einsum("k,bkp->bp", gamma, cov[slots])
    cov[:, clips] += torch.einsum("k,pbk->pb", gamma, cov[:, slots])
    # t_bk <- v_bk - f_b + s_bk
    mean[slots] += offset - mean[clips].unsqueeze(1)
    cov[slots] -= cov[clips].unsqueeze(1)
    cov[:, slots] -= cov[:, clips].unsqueeze(2)
    cov = 0.5 * (cov + cov.T)
    return replace(posterior, mean=mean, cov=cov)


def criterion_part(layout: Layout, n_asked: int, first: int, second: int, slot: int) -> BorderPart:
    """The border part `t_ik - t_jk` of a criterion question about clips (first, second) and
    the asked criterion in position `slot` (layout: the border's, from 0)."""
    start = layout[CRITERIA].start
    return [start + first * n_asked + slot, start + second * n_asked + slot], [1.0, -1.0]


def criterion_moments(
    posterior: Posterior, first: Tensor, second: Tensor, slot: Tensor, n_asked: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Moments of `z = g_ik - g_jk` per candidate (C,), and `s2_f = c' S_2^{-1} c` with
    c = Cov((f_i, f_j), z) and S_2 = Cov(f_i, f_j): Var E[z | f_i, f_j] (MATH.md §9, §3's
    targeted gain with the block (f_i, f_j)).

    Args:
        posterior: dense, with the "criteria" block.
        first, second: (C,) clips; slot: (C,) asked criterion positions.
        n_asked: the number of asked criteria.

    Returns:
        mu, var, quality_var, each (C,).
    """
    start = posterior.layout[CRITERIA].start
    index = torch.stack(
        (first, second, start + first * n_asked + slot, start + second * n_asked + slot), dim=1
    )  # C x 4: f_i, f_j, t_ik, t_jk
    coef = posterior.mean.new_tensor([1.0, -1.0, 1.0, -1.0])
    mean = posterior.mean[index]  # C x 4
    block = posterior.cov[index.unsqueeze(2), index.unsqueeze(1)]  # C x 4 x 4
    mu = mean @ coef
    var = torch.einsum("i,cij,j->c", coef, block, coef).clamp_min(0.0)
    cross = block[:, :2, :] @ coef  # C x 2: Cov((f_i, f_j), z)
    pair = block[:, :2, :2]
    solved = torch.linalg.solve(pair, cross.unsqueeze(-1)).squeeze(-1)
    quality_var = (cross * solved).sum(-1).clamp(min=0.0).minimum(var)
    return mu, var, quality_var


def criterion_gains(
    posterior: Posterior,
    first: Tensor,
    second: Tensor,
    slot: Tensor,
    n_asked: int,
    noise_var: float,
    cuts: Tensor,
    gain: CriterionGain = "quality",
    keep: float = 1.0,
) -> Tensor:
    """(C,) bits: I(y; f_i, f_j) ("quality") or I(y; z) ("all") of criterion questions.

    `I(y; f_i, f_j) = I(y; E[z | f_i, f_j])`: the interval gain of MATH.md §3 with
    s2_f in place of s2 and `sigma^2 + s2 - s2_f` in place of sigma^2 (MATH.md §9); `keep`
    the rater's probability of answering by the model rather than at random (§3, lapses).
    """
    mu, var, quality_var = criterion_moments(posterior, first, second, slot, n_asked)
    if gain == "all":
        return expected_information_gain(mu, var, noise_var, cuts, keep)
    noise = noise_var + (var - quality_var)
    return expected_information_gain(mu, quality_var, noise, cuts, keep)


def criterion_values(posterior: Posterior, n_asked: int) -> tuple[Tensor, Tensor]:
    """(n, Kc) posterior mean and sd of every clip's criterion values `g_ik = f_i + t_ik`."""
    n = posterior.n_items
    start = posterior.layout[CRITERIA].start
    slots = start + torch.arange(n * n_asked, device=posterior.mean.device).reshape(n, n_asked)
    clips = torch.arange(n, device=posterior.mean.device).unsqueeze(1).expand(n, n_asked)
    cov = posterior.cov
    mean = posterior.mean[clips] + posterior.mean[slots]
    var = cov[clips, clips] + cov[slots, slots] + 2 * cov[clips, slots]
    return mean, var.clamp_min(0.0).sqrt()


__all__ = [
    "CRITERIA",
    "CRITERION_GAINS",
    "CriterionGain",
    "CriterionQuestions",
    "add_criterion_values",
    "criterion_gains",
    "criterion_moments",
    "criterion_part",
    "criterion_values",
]
