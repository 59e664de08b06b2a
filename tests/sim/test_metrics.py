"""Metrics against scipy, hand computations and Monte Carlo calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import kendalltau, norm, spearmanr

from sim.metrics import (
    coverage,
    expected_log_loss,
    kendall_tau,
    rmse,
    spearman,
    thurstone_log_probabilities,
    top_k_precision,
    weight_rmse,
)

SEED = 0


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(SEED)


def _grouped(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unequal groups (sizes 3, 7, 12, 5), labels shuffled and not contiguous."""
    groups = rng.permutation(np.repeat([4, 1, 9, 2], [3, 7, 12, 5]))
    truth = rng.standard_normal(groups.size)
    estimate = truth + rng.standard_normal(groups.size)
    return estimate, truth, groups


def test_rank_correlations_equal_scipy(rng: np.random.Generator) -> None:
    truth = rng.standard_normal(30)
    estimate = truth + rng.standard_normal(30)
    estimate[3] = estimate[7]  # a tie: tau-b matters
    assert kendall_tau(estimate, truth, None) == pytest.approx(
        kendalltau(estimate, truth).statistic
    )
    assert spearman(estimate, truth, None) == pytest.approx(spearmanr(estimate, truth).statistic)
    one_group = np.zeros(30, dtype=int)
    assert kendall_tau(estimate, truth, one_group) == pytest.approx(
        kendall_tau(estimate, truth, None)
    )


def _weighted_by_pairs(
    statistic, estimate: np.ndarray, truth: np.ndarray, groups: np.ndarray
) -> float:
    total, weight = 0.0, 0.0
    for g in (4, 1, 9, 2):
        inside = groups == g
        n = inside.sum()
        total += n * (n - 1) / 2 * statistic(estimate[inside], truth[inside]).statistic
        weight += n * (n - 1) / 2
    return total / weight


def test_grouped_rank_correlations_are_pair_weighted(rng: np.random.Generator) -> None:
    estimate, truth, groups = _grouped(rng)
    assert kendall_tau(estimate, truth, groups) == pytest.approx(
        _weighted_by_pairs(kendalltau, estimate, truth, groups)
    )
    assert spearman(estimate, truth, groups) == pytest.approx(
        _weighted_by_pairs(spearmanr, estimate, truth, groups)
    )
    # groups matter: the value is not the pooled one
    assert kendall_tau(estimate, truth, groups) != pytest.approx(kendall_tau(estimate, truth, None))


@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")
def test_rank_correlation_of_a_constant_estimate_is_zero() -> None:
    truth = np.arange(5.0)
    assert kendall_tau(np.ones(5), truth, None) == 0.0
    assert spearman(np.ones(5), truth, None) == 0.0
    # scipy's tau-b is 10 / sqrt(10) / sqrt(10) here: 1 only to rounding
    assert kendall_tau(truth, truth, None) == pytest.approx(1.0, abs=1e-12)
    assert kendall_tau(-truth, truth, None) == pytest.approx(-1.0, abs=1e-12)


def test_singleton_groups_are_skipped() -> None:
    truth = np.array([0.0, 1.0, 2.0, 5.0])
    estimate = np.array([0.0, 1.0, 2.0, -5.0])
    groups = np.array([0, 0, 0, 1])
    assert kendall_tau(estimate, truth, groups) == 1.0


def test_rmse_removes_each_group_mean(rng: np.random.Generator) -> None:
    estimate, truth, groups = _grouped(rng)
    shifted = estimate + np.select([groups == g for g in (4, 1, 9, 2)], [10.0, -3.0, 0.5, 7.0])
    assert rmse(shifted, truth, groups) == pytest.approx(rmse(estimate, truth, groups), abs=1e-12)
    errors = []
    for g in (4, 1, 9, 2):
        inside = groups == g
        e, t = estimate[inside], truth[inside]
        errors.extend((e - e.mean()) - (t - t.mean()))
    assert rmse(estimate, truth, groups) == pytest.approx(math.sqrt(np.mean(np.square(errors))))
    # ungrouped: only the global mean goes; a per-group shift is an error
    assert rmse(estimate + 4.0, truth, None) == pytest.approx(rmse(estimate, truth, None))
    assert rmse(shifted, truth, None) > rmse(estimate, truth, None) + 1.0
    assert rmse(truth + 2.0, truth, None) == pytest.approx(0.0, abs=1e-12)


def test_top_k_precision_by_hand() -> None:
    truth = np.array([9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    estimate = np.array([9.0, 0.0, 7.0, 6.0, 5.0, 8.0, 3.0, 2.0, 1.0, 4.0])
    # k = ceil(0.3 * 10) = 3: true top {0, 1, 2}, estimated top {0, 5, 2}: 2 of 3
    assert top_k_precision(estimate, truth, None, fraction=0.3) == pytest.approx(2 / 3)
    # k = ceil(0.1 * 10) = 1: clip 0 in both
    assert top_k_precision(estimate, truth, None) == 1.0
    # grouped: [0..4] with k = ceil(0.3 * 5) = 2 -> true {0, 1}, est {0, 2}: 1 hit;
    #          [5..9] with k = 2 -> true {5, 6}, est {5, 9}: 1 hit. 2 of 4.
    groups = np.repeat([0, 1], 5)
    assert top_k_precision(estimate, truth, groups, fraction=0.3) == pytest.approx(2 / 4)
    # unequal groups weight by clips: sizes 2 and 8, fraction 0.5 -> k = 1 and 4
    groups = np.array([0, 0, 1, 1, 1, 1, 1, 1, 1, 1])
    # group 0 {0, 1}: true top {0}, est top {0}: 1 hit; group 1 [2..9]: true {2, 3, 4, 5},
    # est ranks 5 (8), 2 (7), 3 (6), 4 (5) -> {5, 2, 3, 4}: 4 hits
    assert top_k_precision(estimate, truth, groups, fraction=0.5) == pytest.approx(5 / 5)


def _spd(rng: np.random.Generator, n: int) -> np.ndarray:
    root = rng.standard_normal((n, n)) / math.sqrt(n)
    return root @ root.T + 0.2 * np.diag(rng.uniform(0.5, 2.0, n))


@pytest.mark.parametrize("grouped", [False, True])
def test_coverage_is_calibrated_for_gaussian_truth(rng: np.random.Generator, grouped: bool) -> None:
    n = 24
    mean = rng.normal(0.0, 2.0, n)
    cov = _spd(rng, n)
    groups = np.repeat([0, 1, 2], [5, 8, 11]) if grouped else None
    draws = rng.multivariate_normal(mean, cov, size=1500)
    rates = [coverage(mean, cov, truth, groups) for truth in draws]
    assert np.mean(rates) == pytest.approx(0.90, abs=0.02)
    # a too-narrow covariance covers too little, a too-wide one too much
    assert np.mean([coverage(mean, cov / 4, t, groups) for t in draws[:300]]) < 0.7
    assert np.mean([coverage(mean, cov * 4, t, groups) for t in draws[:300]]) > 0.97


def test_coverage_by_hand() -> None:
    mean = np.array([0.0, 0.0])
    cov = np.diag([1.0, 1.0])
    # centred: error_i = +-(t0 - t1)/2 with var(f_i - mean f) = 1 - 1 + 0.5 = 0.5
    z = norm.ppf(0.95)
    half = z * math.sqrt(0.5)
    assert coverage(mean, cov, np.array([half * 0.99, -half * 0.99]), None) == 1.0
    assert coverage(mean, cov, np.array([half * 1.01, -half * 1.01]), None) == 0.0


def test_expected_log_loss_is_minimised_by_the_truth(rng: np.random.Generator) -> None:
    p = rng.uniform(0.05, 0.95, 200)
    truth_log_p = np.log(p)
    entropy = -np.mean(p * np.log(p) + (1 - p) * np.log1p(-p))
    best = expected_log_loss(np.log(p), np.log1p(-p), truth_log_p)
    assert best == pytest.approx(entropy)
    for _ in range(50):
        q = np.clip(p + rng.normal(0.0, 0.1, p.size), 1e-3, 1 - 1e-3)
        assert expected_log_loss(np.log(q), np.log1p(-q), truth_log_p) > best
    half = np.full(p.size, math.log(0.5))
    assert expected_log_loss(half, half, truth_log_p) == pytest.approx(math.log(2))


def test_thurstone_log_probabilities() -> None:
    difference = np.array([0.0, 1.0, -2.0])
    var = np.array([0.0, 0.5, 2.0])
    first, second = thurstone_log_probabilities(difference, var, 1.4826)
    scale = np.sqrt(var + 1.4826**2)
    np.testing.assert_allclose(first, norm.logcdf(difference / scale))
    np.testing.assert_allclose(np.exp(first) + np.exp(second), 1.0)


def test_weight_rmse() -> None:
    assert math.isnan(weight_rmse(None, np.ones((2, 3))))
    assert math.isnan(weight_rmse(np.ones((2, 3)), None))
    assert math.isnan(weight_rmse(np.ones((2, 0)), np.ones((2, 0))))
    truth = np.array([[1.0, 2.0], [3.0, 4.0]])
    estimated = truth + np.array([[1.0, -1.0], [3.0, 0.0]])
    assert weight_rmse(estimated, truth) == pytest.approx(math.sqrt((1 + 1 + 9 + 0) / 4))
