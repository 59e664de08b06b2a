"""Cross-check of the engine's ADF posterior against botorch's PairwiseGP (MATH.md §1).

With a single context the engine's model is a GP over clips with the kernel
`k(i, j) = s_i' s_j (weight_scale^2 + context_scale^2) + residual_scale^2 [i = j]`. That kernel
is a plain linear kernel on the features `x_i = [c s_i, tau e_i]` with
`c = sqrt(weight_scale^2 + context_scale^2)`, so botorch's PairwiseGP with a fixed
`ScaleKernel(LinearKernel())` (both scales 1) has exactly the engine's prior. botorch's probit
likelihood is `Phi((f_i - f_j) / sqrt(2))`, so the engine runs with rater noise sd sqrt(2).

The two posteriors still differ by construction: the engine does one pass of assumed density
filtering (order dependent), botorch a Laplace approximation at the MAP. On a small campaign
their posterior means must nonetheless rank the clips almost identically.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from botorch.models.pairwise_gp import PairwiseGP
from gpytorch.kernels import LinearKernel, ScaleKernel
from scipy.stats import kendalltau, pearsonr
from torch import Tensor

from engine.campaign import Campaign, CampaignConfig, Judgment
from engine.likelihoods import Outcome
from engine.state import PriorScales

SEED = 0
N_CLIPS = 20
CRITERIA = ("alignment", "fineness", "coherence")
N_COMPARISONS = 200
NOISE_SD = math.sqrt(2.0)  # botorch's probit likelihood: Phi(dz / sqrt(2))
PRIOR = PriorScales(weight_scale=1.0, context_scale=0.25, residual_scale=0.5)
BOTORCH_Z_LIMIT = 3.0  # PairwiseProbitLikelihood clamps dz / sqrt(2) to +-3


@pytest.fixture
def _seeded_numpy_global() -> Iterator[None]:
    """PairwiseGP's MAP search starts from `np.random`; seed it and restore it afterwards."""
    state = np.random.get_state()
    np.random.seed(SEED)
    yield
    np.random.set_state(state)


def _synthetic_campaign() -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Raw scores, true qualities and forced-choice comparisons (winner, loser) in label order.

    Returns:
        raw: (n, K) raw criterion scores (not standardised, deliberately off-centre).
        quality: (n,) true latent qualities f = s w + u, s the standardised scores.
        comparisons: (winner, loser) clip indices, drawn from the Thurstone model with noise
            sd sqrt(2).
    """
    rng = np.random.default_rng(SEED)
    n_criteria = len(CRITERIA)
    raw = rng.normal(loc=5.0, scale=2.0, size=(N_CLIPS, n_criteria))
    standardised = _standardise(raw)
    weights = rng.normal(scale=PRIOR.weight_scale, size=n_criteria)
    residual = rng.normal(scale=PRIOR.residual_scale, size=N_CLIPS)
    quality = standardised @ weights + residual
    comparisons = []
    for _ in range(N_COMPARISONS):
        first, second = rng.choice(N_CLIPS, size=2, replace=False)
        first_wins = quality[first] - quality[second] + NOISE_SD * rng.standard_normal() > 0
        winner, loser = (first, second) if first_wins else (second, first)
        comparisons.append((int(winner), int(loser)))
    return raw, quality, comparisons


def _standardise(raw: np.ndarray) -> np.ndarray:
    """The engine's per-campaign standardisation: centre and sd (n - 1) per criterion."""
    return (raw - raw.mean(axis=0)) / raw.std(axis=0, ddof=1)


def _features(standardised: np.ndarray) -> Tensor:
    """`x_i = [c s_i, tau e_i]`: a linear kernel on these is the engine's prior kernel."""
    scale = math.sqrt(PRIOR.weight_scale**2 + PRIOR.context_scale**2)
    own = PRIOR.residual_scale * np.eye(standardised.shape[0])
    return torch.from_numpy(np.concatenate((scale * standardised, own), axis=1))


def _botorch_model(features: Tensor, comparisons: list[tuple[int, int]]) -> PairwiseGP:
    """PairwiseGP with a fixed linear kernel (variance and outputscale 1), zero mean, no merging."""
    linear = LinearKernel()
    linear.variance = 1.0
    kernel = ScaleKernel(linear)
    kernel.outputscale = 1.0
    kernel = kernel.to(features)
    for parameter in kernel.parameters():
        parameter.requires_grad_(False)
    model = PairwiseGP(
        features,
        torch.tensor(comparisons, dtype=torch.long),
        covar_module=kernel,
        consolidate_atol=0.0,
        consolidate_rtol=0.0,
    )
    model.eval()
    return model


@pytest.mark.usefixtures("_seeded_numpy_global")
def test_engine_matches_botorch_pairwise_gp_on_a_small_campaign() -> None:
    raw, quality, comparisons = _synthetic_campaign()
    campaign = Campaign(
        CampaignConfig(criteria=CRITERIA, noise_sd=NOISE_SD, prior=PRIOR), device="cpu"
    )
    campaign.add_clips(torch.from_numpy(raw))
    features = _features(_standardise(raw))
    model = _botorch_model(features, comparisons)

    # The same prior: zero mean and the same clip covariance (a kernel mismatch shows here).
    assert float(model.mean_module.constant) == 0.0
    assert model.datapoints.shape[0] == N_CLIPS  # nothing was consolidated
    torch.testing.assert_close(campaign.posterior.item_mean, torch.zeros(N_CLIPS))
    torch.testing.assert_close(
        model.covar_module(features).to_dense(),
        campaign.posterior.item_cov,
        rtol=1e-10,
        atol=1e-10,
    )

    campaign.observe(
        [Judgment.pair(None, winner, loser, Outcome.WIN) for winner, loser in comparisons]
    )
    engine_mean = campaign.posterior.item_mean.numpy()
    with torch.no_grad():
        botorch_mean = model.posterior(features).mean.squeeze(-1).numpy()

    # botorch clamps z = (f_winner - f_loser) / sqrt(2) to +-3. Above +3 that barely matters
    # (the probit gradient phi(z) / Phi(z) is below 0.0044 there), but an upset below -3 would
    # cap the pull of a surprising label, and the two likelihoods would differ.
    winners, losers = np.array(comparisons).T
    z_winner = (botorch_mean[winners] - botorch_mean[losers]) / math.sqrt(2.0)
    assert z_winner.min() > -BOTORCH_Z_LIMIT

    tau_methods = kendalltau(engine_mean, botorch_mean).statistic
    pearson_methods = pearsonr(engine_mean, botorch_mean).statistic
    assert tau_methods >= 0.9, f"Kendall tau engine vs botorch {tau_methods:.3f}"
    assert pearson_methods >= 0.95, f"Pearson engine vs botorch {pearson_methods:.3f}"
    assert np.argmax(engine_mean) == np.argmax(botorch_mean)
    # Same scale, not only the same order.
    spread_ratio = engine_mean.std() / botorch_mean.std()
    assert 0.8 <= spread_ratio <= 1.25, f"posterior mean spread ratio {spread_ratio:.3f}"

    # Both must have learned the truth, so that agreement is not trivial.
    for name, mean in (("engine", engine_mean), ("botorch", botorch_mean)):
        tau_truth = kendalltau(mean, quality).statistic
        assert tau_truth >= 0.5, f"Kendall tau {name} vs truth {tau_truth:.3f}"
