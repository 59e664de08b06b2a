"""The gain of a pair whose answers include "both good" and "both bad" (MATH.md §3): against
Monte Carlo of the answer model, its limits, symmetry and batching."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import ndtr

from engine import Campaign, CampaignConfig, Judgment, Outcome, objectives
from engine.objectives import BOTH_CHUNK, both_information_gain, interval_information_gain
from engine.questions import BOTH_BAD, BOTH_GOOD
from engine.selection import SelectionOptions

SEED = 0
N_DRAWS = 1_000_000
# (mu, var, sum_mu, sum_var, cov, noise_var, tie_margin, tau, keep): narrow and wide
# posteriors (both quadrature rules on each axis), correlated sums, lapses, wide cuts
CASES = [
    (0.0, 1.0, 0.0, 3.0, 0.5, 1.0, 0.5, 0.5, 1.0),
    (0.3, 0.2, 1.0, 0.5, 0.1, 1.0, 0.5, 0.5, 1.0),
    (0.0, 9.0, 0.5, 25.0, 2.0, 1.0, 0.5, 0.5, 1.0),
    (1.0, 4.0, -1.0, 4.0, -1.0, 2.2, 0.5, 0.9, 0.85),
    (0.0, 0.01, 3.0, 0.02, 0.0, 1.0, 1.0, 1.0, 1.0),
    (-2.0, 16.0, 5.0, 40.0, -3.0, 1.0, 3.0, 2.0, 0.9),
    (0.0, 2.0, 0.0, 50.0, 0.0, 0.5, 0.2, 0.3, 1.0),
]


def _entropy_bits(p: np.ndarray) -> np.ndarray:
    safe = np.where(p > 0, p, 1.0)
    return -(p * np.log2(safe)).sum(0)


def _monte_carlo(case: tuple[float, ...]) -> tuple[float, float]:
    """I(y; d, s) from draws of (d, s) with p(y | d, s) exact; and the standard error."""
    mu, var, sum_mu, sum_var, cov, noise_var, t, tau, keep = case
    rng = np.random.default_rng(SEED)
    draws = rng.multivariate_normal(
        [mu, sum_mu], [[var, cov], [cov, sum_var]], size=N_DRAWS, method="cholesky"
    )
    d, s = draws[:, 0], draws[:, 1]
    sigma, sum_sigma = math.sqrt(noise_var), math.sqrt(2 * noise_var)
    loss, win = ndtr((-t - d) / sigma), ndtr((d - t) / sigma)
    tie = np.clip(1 - loss - win, 0, None)
    good, bad = ndtr((s - 2 * tau) / sum_sigma), ndtr((-2 * tau - s) / sum_sigma)
    plain = np.clip(1 - good - bad, 0, None)
    p = keep * np.stack([loss, tie * plain, win, tie * good, tie * bad]) + (1 - keep) / 5
    conditional = _entropy_bits(p)
    gain = _entropy_bits(p.mean(1)) - conditional.mean()
    return float(gain), float(conditional.std() / math.sqrt(N_DRAWS))


def _gain(case: tuple[float, ...], dtype: torch.dtype = torch.float64) -> float:
    mu, var, sum_mu, sum_var, cov, noise_var, t, tau, keep = case
    tensors = [torch.tensor([x], dtype=dtype) for x in (mu, var, sum_mu, sum_var, cov)]
    return float(both_information_gain(*tensors, noise_var, t, tau, keep)[0])


@pytest.mark.parametrize("case", CASES)
def test_gain_matches_monte_carlo_of_the_answer_model(case: tuple[float, ...]) -> None:
    reference, error = _monte_carlo(case)
    assert _gain(case) == pytest.approx(reference, abs=5 * error + 2e-4)


def test_far_threshold_leaves_the_tie_gain_and_both_answers_add_information() -> None:
    generator = torch.Generator().manual_seed(SEED)
    n = 300
    mu = 3 * torch.randn(n, generator=generator, dtype=torch.float64)
    var = 4 * torch.rand(n, generator=generator, dtype=torch.float64) + 1e-3
    var_i = var * torch.rand(n, generator=generator, dtype=torch.float64)
    var_j = var - var_i  # independent clips: Var d = Var s = var_i + var_j
    cov = var_i - var_j
    sum_mu = torch.randn(n, generator=generator, dtype=torch.float64)
    cuts = torch.tensor([-0.5, 0.5], dtype=torch.float64)
    ternary = interval_information_gain(mu, var, 1.0, cuts)
    far = both_information_gain(mu, var, sum_mu, var, cov, 1.0, 0.5, 60.0)
    torch.testing.assert_close(far, ternary, atol=1e-7, rtol=0)
    both = both_information_gain(mu, var, sum_mu, var, cov, 1.0, 0.5, 0.5)
    # the five answers refine the three: never less information, often much more
    assert bool((both >= ternary - 1e-7).all())
    assert float((both - ternary).mean()) > 0.02


def test_gain_is_symmetric_in_the_pair_and_batches_across_chunks() -> None:
    generator = torch.Generator().manual_seed(SEED)
    n = BOTH_CHUNK * 2 + 17
    mu = 2 * torch.randn(n, generator=generator, dtype=torch.float64)
    var_i = 3 * torch.rand(n, generator=generator, dtype=torch.float64)
    var_j = 3 * torch.rand(n, generator=generator, dtype=torch.float64)
    var, sum_var, cov = var_i + var_j, var_i + var_j, var_i - var_j
    sum_mu = torch.randn(n, generator=generator, dtype=torch.float64)
    noise = 0.5 + torch.rand(n, generator=generator, dtype=torch.float64)
    gains = both_information_gain(mu, var, sum_mu, sum_var, cov, noise, 0.5, 0.4, keep=0.9)
    # (j, i): d and Cov(d, s) change sign, s does not
    swapped = both_information_gain(-mu, var, sum_mu, sum_var, -cov, noise, 0.5, 0.4, keep=0.9)
    torch.testing.assert_close(gains, swapped, atol=1e-10, rtol=0)
    for index in (0, BOTH_CHUNK, n - 1):
        one = both_information_gain(
            mu[index : index + 1],
            var[index : index + 1],
            sum_mu[index : index + 1],
            sum_var[index : index + 1],
            cov[index : index + 1],
            noise[index : index + 1],
            0.5,
            0.4,
            keep=0.9,
        )
        assert float(one[0]) == pytest.approx(float(gains[index]), abs=1e-12)
    assert bool((gains >= 0).all()) and bool(torch.isfinite(gains).all())


def test_float32_and_bad_arguments() -> None:
    case = CASES[0]
    assert _gain(case, torch.float32) == pytest.approx(_gain(case), abs=1e-4)
    one = torch.ones(1, dtype=torch.float64)
    with pytest.raises(ValueError, match="tie_margin"):
        both_information_gain(one, one, one, one, one, 1.0, 0.0, 0.5)
    with pytest.raises(ValueError, match="both_threshold"):
        both_information_gain(one, one, one, one, one, 1.0, 0.5, -1.0)
    with pytest.raises(ValueError, match="both_threshold"):
        both_information_gain(one, one, one, one, one, 1.0, 0.5, math.nan)
    with pytest.raises(ValueError, match="keep"):
        both_information_gain(one, one, one, one, one, 1.0, 0.5, 0.5, keep=1.5)
    with pytest.raises(ValueError, match="noisy"):
        both_information_gain(one, one, one, one, one, 0.0, 0.5, 0.5)


def _selection_campaign(structure: str, both_gain: bool = True) -> Campaign:
    campaign = Campaign(
        CampaignConfig(
            pair_scope="group",
            structure=structure,
            tie_margin=0.3,
            both_threshold=0.5,
            selection=SelectionOptions(both_gain=both_gain),
        ),
        device="cpu",
    )
    scores = torch.randn(12, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    campaign.add_clips(
        scores.tolist(), groups=[i // 4 for i in range(12)], contexts=[i // 8 for i in range(12)]
    )
    campaign.observe(
        [
            Judgment.pair("r0", 0, 1, BOTH_GOOD),
            Judgment.pair("r1", 4, 6, Outcome.WIN),
            Judgment.pair("r0", 9, 11, BOTH_BAD),
        ]
    )
    return campaign


def _direct_gain(campaign: Campaign, first: int, second: int, rater: str) -> float:
    """The both gain of (first, second) from the posterior's own moments (nothing pending)."""
    cov, mean = campaign.posterior.item_cov, campaign.posterior.item_mean
    i, j = first, second
    return float(
        both_information_gain(
            (mean[i] - mean[j]).reshape(1),
            (cov[i, i] + cov[j, j] - 2 * cov[i, j]).reshape(1),
            (mean[i] + mean[j]).reshape(1),
            (cov[i, i] + cov[j, j] + 2 * cov[i, j]).reshape(1),
            (cov[i, i] - cov[j, j]).reshape(1),
            campaign.noise_sd(rater) ** 2,
            0.3,
            0.5,
            campaign.keep_probability(rater),
        )[0]
    )


@pytest.mark.parametrize("structure", ["dense", "blocks", "factorised"])
def test_selection_scores_pairs_by_the_both_gain_in_every_form(structure: str) -> None:
    campaign = _selection_campaign(structure)
    tasks = campaign.next_pairs("r2", count=3, hold=False)
    for task in tasks[:1]:  # the first pick sees no pending task: its gain is the posterior's
        assert task.gain == pytest.approx(_direct_gain(campaign, task.first, task.second, "r2"))
    ternary = _selection_campaign(structure, both_gain=False).next_pairs("r2", hold=False)[0]
    assert tasks[0].gain > ternary.gain  # the five answers carry more than three
    # the believer's later picks agree between the forms
    dense = _selection_campaign("dense").next_pairs("r2", count=3, hold=False)
    assert [(t.first, t.second) for t in tasks] == [(t.first, t.second) for t in dense]
    for mine, theirs in zip(tasks, dense, strict=True):
        assert mine.gain == pytest.approx(theirs.gain, abs=1e-9)


@pytest.mark.parametrize(("tie_margin", "threshold"), [(0.3, 0.5), (3.0, 5.0), (1.0, 0.0)])
def test_the_quadrature_rule_agrees_with_a_much_finer_one(
    tie_margin: float, threshold: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The both gain at BOTH_NODES a side against 160 a side, on 300 random posteriors of
    (d, s) with cuts from 0.3 to 10 sigma apart: within 1e-5 bits."""
    generator = torch.Generator().manual_seed(5)
    count = 300

    def draw(scale: float, shift: float = 0.0) -> torch.Tensor:
        values = torch.rand(count, generator=generator, dtype=torch.float64)
        return values * scale + shift

    var, extra = draw(3.0, 0.01), draw(2.0)
    mu = (draw(1.0) - 0.5) * 3.0
    sum_mu, sum_var = (draw(1.0) - 0.5) * 4.0, var + extra
    covariance = (draw(1.0) - 0.5) * torch.sqrt(var * sum_var) * 0.9
    moments = (mu, var, sum_mu, sum_var, covariance, 1.0, tie_margin, threshold)
    used = objectives.both_information_gain(*moments)
    monkeypatch.setattr(objectives, "BOTH_NODES", 160)
    fine = objectives.both_information_gain(*moments)
    assert float((used - fine).abs().max()) < 1e-5
