"""The gain about the criterion weights against a Monte Carlo estimate of I(y; w)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import ndtr

from engine.campaign import Campaign, CampaignConfig
from engine.selection import SelectionOptions, select_pairs
from engine.state import PriorScales
from engine.targeted import (
    mixed_information_gain,
    weight_explained_variance,
    weight_information_gain,
)

SEED = 0
N_DRAWS = 400_000
CLOSED_FORM_ERROR = 0.0028  # bits: the binary closed form's largest error (MATH.md §3)


def _entropy_bits(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-300, None)
    return -(p * np.log2(p)).sum(-1)


def _campaign(tie_margin: float) -> Campaign:
    rng = np.random.default_rng(SEED)
    config = CampaignConfig(
        criteria=("a", "b", "c"),
        prior=PriorScales(weight_scale=1.0, context_scale=0.4, residual_scale=0.7),
        tie_margin=tie_margin,
    )
    campaign = Campaign(config, device="cpu")
    campaign.add_clips(rng.normal(size=(10, 3)), contexts=["x", "y"] * 5)
    for _ in range(15):  # after labels, weights and residuals are correlated
        i, j = rng.choice(10, 2, replace=False)
        campaign.observe_pair(int(i), int(j), "win" if rng.random() < 0.6 else "loss")
    return campaign


def _monte_carlo(campaign: Campaign, i: int, j: int, cuts: list[float]) -> tuple[float, float]:
    """`H[E_w p(y | w)] - E_w H[p(y | w)]`, w drawn from its marginal, the z | w integral exact."""
    mean, cov = campaign.posterior.mean.numpy(), campaign.posterior.cov.numpy()
    n = campaign.n_items
    a = np.zeros(len(mean))
    a[i], a[j] = 1.0, -1.0
    mu, var = a @ mean, a @ cov @ a
    c_w = (cov @ a)[n:]
    s_ww = cov[n:, n:]
    gain_w = np.linalg.solve(s_ww, c_w)
    explained = c_w @ gain_w
    rng = np.random.default_rng(SEED + 1)
    w = rng.multivariate_normal(mean[n:], s_ww, size=N_DRAWS)
    mu_given_w = mu + (w - mean[n:]) @ gain_w
    scale = np.sqrt(var - explained + campaign.noise_sd(None) ** 2)
    edges = np.concatenate(([-np.inf], cuts, [np.inf]))
    cdf = ndtr((edges[None, :] - mu_given_w[:, None]) / scale)
    p = np.diff(cdf, axis=1)  # draws x outcomes
    conditional = _entropy_bits(p)
    gain = _entropy_bits(p.mean(0)) - conditional.mean()
    return float(gain), float(conditional.std() / np.sqrt(N_DRAWS))


@pytest.mark.parametrize("tie_margin", [0.0, 0.5])
def test_weight_gain_matches_monte_carlo(tie_margin: float) -> None:
    campaign = _campaign(tie_margin)
    first = torch.tensor([0, 2, 5])
    second = torch.tensor([1, 7, 9])
    gains = weight_information_gain(
        campaign.posterior, first, second, campaign.noise_sd(None) ** 2, campaign.pair_cuts
    )
    cuts = campaign.pair_cuts.tolist()
    for b in range(3):
        reference, standard_error = _monte_carlo(campaign, int(first[b]), int(second[b]), cuts)
        slack = (CLOSED_FORM_ERROR if tie_margin == 0 else 1e-6) + 5 * standard_error
        assert float(gains[b]) == pytest.approx(reference, abs=slack)
        assert reference > 0.01  # a real signal, not two zeros agreeing


def test_weight_gain_is_part_of_the_clip_gain_and_mixing_interpolates() -> None:
    campaign = _campaign(0.0)
    first, second = torch.triu_indices(10, 10, 1)
    noise, cuts = campaign.noise_sd(None) ** 2, campaign.pair_cuts
    weights = weight_information_gain(campaign.posterior, first, second, noise, cuts)
    clips = mixed_information_gain(campaign.posterior, first, second, noise, cuts, 0.0)
    only_weights = mixed_information_gain(campaign.posterior, first, second, noise, cuts, 1.0)
    half = mixed_information_gain(campaign.posterior, first, second, noise, cuts, 0.5)
    torch.testing.assert_close(only_weights, weights)
    torch.testing.assert_close(half, 0.5 * (clips + weights))
    # y depends on w only through z: I(y; w) <= I(y; z) (data processing)
    assert bool((weights <= clips + CLOSED_FORM_ERROR).all())
    explained = weight_explained_variance(campaign.posterior, first, second)
    assert bool((explained >= 0).all())
    with pytest.raises(ValueError):
        mixed_information_gain(campaign.posterior, first, second, noise, cuts, 1.5)


def test_no_criteria_means_no_weight_gain() -> None:
    campaign = Campaign(CampaignConfig(criteria=()), device="cpu")
    campaign.add_clips(count=4)
    gains = weight_information_gain(
        campaign.posterior, torch.tensor([0]), torch.tensor([1]), 1.0, campaign.pair_cuts
    )
    assert float(gains[0]) == 0.0


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_selection_with_a_weight_share_takes_the_exhaustive_best_pair(share: float) -> None:
    campaign = _campaign(0.0)
    first, second = torch.triu_indices(10, 10, 1)  # 45 pairs: all of them are refined
    noise, cuts = campaign.noise_sd(None) ** 2, campaign.pair_cuts
    gains = mixed_information_gain(campaign.posterior, first, second, noise, cuts, share)
    best = int(torch.argmax(gains))
    options = SelectionOptions(weight_share=share)
    choice = select_pairs(campaign.posterior, noise_var=noise, pair_cuts=cuts, options=options)[0]
    assert (choice.first, choice.second) == (int(first[best]), int(second[best]))
    assert choice.gain == pytest.approx(float(gains[best]), abs=1e-12)


def test_weight_share_changes_the_choice_and_is_validated() -> None:
    campaign = _campaign(0.0)
    noise, cuts = campaign.noise_sd(None) ** 2, campaign.pair_cuts
    picks = {
        share: select_pairs(
            campaign.posterior,
            noise_var=noise,
            pair_cuts=cuts,
            options=SelectionOptions(weight_share=share),
        )[0]
        for share in (0.0, 1.0)
    }
    assert (picks[0.0].first, picks[0.0].second) != (picks[1.0].first, picks[1.0].second)
    with pytest.raises(ValueError, match="weight_share"):
        SelectionOptions(weight_share=1.5)
