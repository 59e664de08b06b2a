"""How close an estimate is to the truth: rank agreement, error, calibration, prediction.

Where pairs are only asked within groups (prompts), qualities in different groups are not
comparable, so every metric is computed within each group and averaged with weights (pairs per
group for rank correlations, clips per group otherwise); "any" scope is one group.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy.special import log_ndtr
from scipy.stats import kendalltau, norm, spearmanr

COVERAGE_LEVEL = 0.9


def _segments(groups: np.ndarray | None, n: int) -> list[np.ndarray]:
    if groups is None:
        return [np.arange(n)]
    return [np.flatnonzero(groups == g) for g in np.unique(groups)]


def _rank_correlation(
    statistic: Callable[[np.ndarray, np.ndarray], float],
    estimate: np.ndarray,
    truth: np.ndarray,
    groups: np.ndarray | None,
) -> float:
    """`statistic` within groups, averaged with weights n_g (n_g - 1) / 2 (pairs per group)."""
    values, weights = [], []
    for index in _segments(groups, len(truth)):
        if index.size >= 2:
            # a constant estimate (no labels yet) ranks nothing: 0, not scipy's NaN and warning
            flat = np.ptp(estimate[index]) == 0
            values.append(0.0 if flat else statistic(estimate[index], truth[index]))
            weights.append(index.size * (index.size - 1) / 2)
    return float(np.average(values, weights=weights))


def kendall_tau(estimate: np.ndarray, truth: np.ndarray, groups: np.ndarray | None) -> float:
    """Kendall tau-b within groups, averaged with weights n_g (n_g - 1) / 2."""
    return _rank_correlation(lambda a, b: kendalltau(a, b).statistic, estimate, truth, groups)


def spearman(estimate: np.ndarray, truth: np.ndarray, groups: np.ndarray | None) -> float:
    """Spearman rho within groups, averaged with weights n_g (n_g - 1) / 2."""
    return _rank_correlation(lambda a, b: spearmanr(a, b).statistic, estimate, truth, groups)


def rmse(estimate: np.ndarray, truth: np.ndarray, groups: np.ndarray | None) -> float:
    """Root mean squared error (JOD) after removing each group's mean from both."""
    squared = []
    for index in _segments(groups, len(truth)):
        error = (estimate[index] - estimate[index].mean()) - (truth[index] - truth[index].mean())
        squared.append(error**2)
    return float(np.sqrt(np.mean(np.concatenate(squared))))


def top_k_precision(
    estimate: np.ndarray, truth: np.ndarray, groups: np.ndarray | None, fraction: float = 0.1
) -> float:
    """Share of the true top-k clips (k = ceil(fraction n_g), per group) found in the
    estimated top-k, averaged over clips."""
    hits, total = 0, 0
    for index in _segments(groups, len(truth)):
        k = max(1, math.ceil(fraction * index.size))
        best_true = set(index[np.argsort(-truth[index], kind="stable")[:k]].tolist())
        best_est = set(index[np.argsort(-estimate[index], kind="stable")[:k]].tolist())
        hits += len(best_true & best_est)
        total += k
    return hits / total


def coverage(
    mean: np.ndarray,
    cov: np.ndarray,
    truth: np.ndarray,
    groups: np.ndarray | None,
    level: float = COVERAGE_LEVEL,
) -> float:
    """Share of clips whose true quality lies in the central `level` credible interval, both
    centred per group: the interval uses the variance of `f_i - mean_g(f)`."""
    z = norm.ppf(0.5 + level / 2)
    inside = []
    for index in _segments(groups, len(truth)):
        block = cov[np.ix_(index, index)]
        row_mean = block.mean(axis=1)
        var = np.diag(block) - 2 * row_mean + block.mean()
        sd = np.sqrt(np.clip(var, 0.0, None))
        error = (mean[index] - mean[index].mean()) - (truth[index] - truth[index].mean())
        inside.append(np.abs(error) <= z * sd)
    return float(np.mean(np.concatenate(inside)))


def expected_log_loss(
    log_p_first: np.ndarray, log_p_second: np.ndarray, truth_log_p_first: np.ndarray
) -> float:
    """Cross-entropy (nats) of held-out forced-choice answers: `-E[p* log p + (1-p*) log(1-p)]`
    with p* the true probability, averaged over the held-out pairs (the expectation replaces
    sampling the held-out answers, which only adds noise)."""
    p_true = np.exp(truth_log_p_first)
    return float(-np.mean(p_true * log_p_first + (1 - p_true) * log_p_second))


def thurstone_log_probabilities(
    difference: np.ndarray, var: np.ndarray, noise_sd: float
) -> tuple[np.ndarray, np.ndarray]:
    """`log Phi(+-d / sqrt(var + sigma^2))`: forced-choice predictive of a Gaussian difference."""
    scale = np.sqrt(var + noise_sd**2)
    return log_ndtr(difference / scale), log_ndtr(-difference / scale)


def weight_rmse(estimated: np.ndarray | None, truth: np.ndarray | None) -> float:
    """RMS error of the recovered criterion weights over contexts and criteria (NaN if none)."""
    if estimated is None or truth is None or truth.size == 0:
        return math.nan
    return float(np.sqrt(np.mean((estimated - truth) ** 2)))


__all__ = [
    "COVERAGE_LEVEL",
    "coverage",
    "expected_log_loss",
    "kendall_tau",
    "rmse",
    "spearman",
    "thurstone_log_probabilities",
    "top_k_precision",
    "weight_rmse",
]
