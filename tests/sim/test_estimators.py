"""The fixed estimator (MAP Thurstone + Laplace) against an independent optimisation."""

from __future__ import annotations

import numpy as np
import pytest

from engine import Outcome
from sim.estimators import fit_thurstone, outcome_signs, win_counts
from tests.sim.reference import negative_log_posterior, numerical_hessian, reference_map

SEED = 0


def _random_comparisons(
    n: int = 6, m: int = 60, seed: int = SEED
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """m comparisons among n items, answered by a Thurstone model with ties (~20 %)."""
    rng = np.random.default_rng(seed)
    quality = rng.normal(0.0, 1.5, n)
    first = rng.integers(n, size=m)
    second = (first + rng.integers(1, n, size=m)) % n
    perceived = quality[first] - quality[second] + 1.4826 * rng.standard_normal(m)
    sign = np.where(np.abs(perceived) < 0.4, 0.0, np.sign(perceived))
    return first, second, sign


def test_random_data_has_ties_and_both_orientations() -> None:
    first, second, sign = _random_comparisons()
    assert (sign == 0).sum() >= 5 and (sign > 0).sum() >= 10 and (sign < 0).sum() >= 10
    assert np.all(first != second)


def test_map_equals_independent_bfgs() -> None:
    first, second, sign = _random_comparisons()
    fit = fit_thurstone(win_counts(6, first, second, sign))
    expected = reference_map(6, first, second, sign)
    np.testing.assert_allclose(fit.mean, expected, atol=1e-4)
    # and it is a minimum of the independent objective: no nearby point is lower
    best = negative_log_posterior(fit.mean, first, second, sign)
    rng = np.random.default_rng(SEED)
    for _ in range(20):
        nudged = fit.mean + 1e-3 * rng.standard_normal(6)
        assert negative_log_posterior(nudged, first, second, sign) > best


def test_map_honours_noise_and_prior_scales() -> None:
    first, second, sign = _random_comparisons(seed=SEED + 1)
    fit = fit_thurstone(win_counts(6, first, second, sign), noise_sd=0.8, prior_sd=1.2)
    expected = reference_map(6, first, second, sign, noise_sd=0.8, prior_sd=1.2)
    np.testing.assert_allclose(fit.mean, expected, atol=1e-4)


def test_warm_start_reaches_the_same_map() -> None:
    first, second, sign = _random_comparisons()
    counts = win_counts(6, first, second, sign)
    cold = fit_thurstone(counts)
    warm = fit_thurstone(counts, start=np.linspace(-3, 3, 6))
    np.testing.assert_allclose(warm.mean, cold.mean, atol=1e-6)


def test_laplace_covariance_is_inverse_numerical_hessian() -> None:
    first, second, sign = _random_comparisons()
    fit = fit_thurstone(win_counts(6, first, second, sign))
    hessian = numerical_hessian(fit.mean, first, second, sign)
    expected = np.linalg.inv(hessian)
    scale = np.max(np.abs(expected))
    np.testing.assert_allclose(fit.cov, expected, atol=1e-4 * scale, rtol=1e-4)
    np.testing.assert_allclose(fit.cov, fit.cov.T, atol=1e-12)
    assert np.all(np.linalg.eigvalsh(fit.cov) > 0)


def test_without_cov_returns_the_same_mean() -> None:
    first, second, sign = _random_comparisons()
    counts = win_counts(6, first, second, sign)
    np.testing.assert_allclose(
        fit_thurstone(counts, with_cov=False).mean, fit_thurstone(counts).mean, atol=1e-8
    )
    assert fit_thurstone(counts, with_cov=False).cov.size == 0


def test_win_counts_ties_are_half_both_ways() -> None:
    first = np.array([0, 1, 2, 0, 2])
    second = np.array([1, 0, 0, 2, 1])
    outcome = np.array([1.0, 1.0, 0.0, -1.0, 0.0])
    expected = np.zeros((3, 3))
    expected[0, 1] += 1  # 0 beat 1
    expected[1, 0] += 1  # 1 beat 0
    expected[2, 0] += 0.5  # tie 2-0
    expected[0, 2] += 0.5
    expected[2, 0] += 1  # 0 lost to 2
    expected[2, 1] += 0.5  # tie 2-1
    expected[1, 2] += 0.5
    counts = win_counts(3, first, second, outcome)
    np.testing.assert_array_equal(counts, expected)
    # every comparison adds exactly one unit
    assert counts.sum() == len(first)


def test_outcome_signs() -> None:
    signs = outcome_signs([Outcome.WIN, Outcome.TIE, Outcome.LOSS])
    np.testing.assert_array_equal(signs, [1.0, 0.0, -1.0])


def test_a_clip_that_never_loses_stays_finite() -> None:
    n = 4
    first = np.repeat(0, 30)
    second = np.tile([1, 2, 3], 10)
    sign = np.ones(30)
    # the others play each other too
    first = np.concatenate([first, [1, 2, 3, 1]])
    second = np.concatenate([second, [2, 3, 1, 3]])
    sign = np.concatenate([sign, [1.0, -1.0, 0.0, 1.0]])
    fit = fit_thurstone(win_counts(n, first, second, sign))
    assert np.all(np.isfinite(fit.mean)) and np.all(np.isfinite(fit.cov))
    assert fit.mean[0] == pytest.approx(np.max(fit.mean))
    assert fit.mean[0] < 4 * 3.0  # the N(0, 3^2) prior keeps it within a few prior sds
    np.testing.assert_allclose(fit.mean, reference_map(n, first, second, sign), atol=1e-4)
    assert np.all(np.linalg.eigvalsh(fit.cov) > 0)


def test_no_data_gives_the_prior() -> None:
    fit = fit_thurstone(np.zeros((3, 3)))
    np.testing.assert_allclose(fit.mean, 0.0, atol=1e-12)
    np.testing.assert_allclose(fit.cov, 9.0 * np.eye(3), atol=1e-12)
