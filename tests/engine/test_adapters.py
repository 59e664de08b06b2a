"""The ASAP-style win-matrix sampler: pair format, incremental feeding, validation, closed loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau

from engine.adapters import JOD_NOISE_SD, make_strategy
from engine.likelihoods import Outcome
from engine.questions import Pair

SEED = 0
N = 12


def _state(strategy) -> tuple[torch.Tensor, torch.Tensor, int]:
    posterior = strategy.campaign_.posterior
    return posterior.mean.clone(), posterior.cov.clone(), len(strategy.campaign_.log)


@pytest.mark.parametrize("batch_size", [1, 5, 20])
def test_pairs_are_ordered_in_range_and_distinct(batch_size: int) -> None:
    """batch_size pairs (i, j) of ints with 0 <= i < j < n, no pair twice in a batch."""
    strategy = make_strategy(N, SEED)
    pairs = strategy.next_pairs(N, np.zeros((N, N), dtype=np.int64), batch_size)
    assert len(pairs) == batch_size
    assert len(set(pairs)) == batch_size
    for i, j in pairs:
        assert isinstance(i, int) and isinstance(j, int)
        assert 0 <= i < j < N
    assert strategy.campaign_.pending == ()  # the adapter holds nothing between calls


def test_same_matrix_twice_adds_nothing() -> None:
    """Counts already seen are not fed again: the posterior and log stay as they are."""
    strategy = make_strategy(N, SEED)
    counts = np.zeros((N, N), dtype=np.int64)
    counts[0, 1], counts[3, 2], counts[5, 9] = 2, 1, 3
    strategy.next_pairs(N, counts, 2)
    mean, cov, n_log = _state(strategy)
    assert n_log == 6
    strategy.next_pairs(N, counts.copy(), 2)
    assert torch.equal(strategy.campaign_.posterior.mean, mean)
    assert torch.equal(strategy.campaign_.posterior.cov, cov)
    assert len(strategy.campaign_.log) == n_log


@pytest.mark.parametrize("increment", [1, 3])
def test_only_new_counts_are_fed(increment: int) -> None:
    """One entry grown by k adds exactly k wins of that row over that column."""
    strategy = make_strategy(N, SEED)
    counts = np.zeros((N, N), dtype=np.int64)
    counts[1, 4] = 2
    strategy.next_pairs(N, counts)
    before = len(strategy.campaign_.log)
    mean = strategy.campaign_.posterior.mean.clone()
    counts = counts.copy()
    counts[7, 3] += increment
    strategy.next_pairs(N, counts)
    log = strategy.campaign_.log
    assert len(log) == before + increment
    for judgment in log[before:]:
        assert (judgment.question, judgment.answer) == (Pair(7, 3), Outcome.WIN)
    item_mean = strategy.campaign_.posterior.item_mean
    assert float(item_mean[7] - item_mean[3]) > float(mean[7] - mean[3])


def _bad_matrices() -> list[object]:
    good = np.zeros((N, N), dtype=np.int64)
    good[0, 1] = 3
    negative = good.copy()
    negative[2, 5] = -1
    diagonal = good.copy()
    diagonal[4, 4] = 1
    shrunk = good.copy()
    shrunk[0, 1] = 2
    fraction = good.astype(float)
    fraction[6, 7] = 0.5
    missing = good.astype(float)
    missing[6, 7] = np.nan
    cases = [
        ("too large", N, np.zeros((N + 1, N + 1), dtype=np.int64)),
        ("not square", N, np.zeros((N, N - 1), dtype=np.int64)),
        ("flat", N, np.zeros(N * N, dtype=np.int64)),
        ("n mismatch", N + 1, np.zeros((N + 1, N + 1), dtype=np.int64)),
        ("negative", N, negative),
        ("diagonal", N, diagonal),
        ("shrinking", N, shrunk),
        ("fraction", N, fraction),
        ("nan", N, missing),
    ]
    return [pytest.param(n, matrix, id=name) for name, n, matrix in cases]


@pytest.mark.parametrize(("n", "matrix"), _bad_matrices())
def test_invalid_matrix_raises_and_changes_nothing(n: int, matrix: np.ndarray) -> None:
    """Every malformed M raises ValueError before anything is fed."""
    strategy = make_strategy(N, SEED)
    first = np.zeros((N, N), dtype=np.int64)
    first[0, 1] = 3
    strategy.next_pairs(N, first)
    mean, cov, n_log = _state(strategy)
    with pytest.raises(ValueError):
        strategy.next_pairs(n, matrix)
    assert torch.equal(strategy.campaign_.posterior.mean, mean)
    assert torch.equal(strategy.campaign_.posterior.cov, cov)
    assert len(strategy.campaign_.log) == n_log
    assert np.array_equal(strategy.seen_, first)


def test_too_few_conditions_raise() -> None:
    """One condition has no pair."""
    with pytest.raises(ValueError):
        make_strategy(1)


def _closed_loop(seed: int, n: int = N, total: int = 150, batch: int = 5):
    """A Thurstone observer (true sd 1.5, noise sd 1.4826) answering the strategy's batches."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(0.0, 1.5, size=n)
    strategy = make_strategy(n, seed)
    counts = np.zeros((n, n), dtype=np.int64)
    asked: list[tuple[int, int]] = []
    for _ in range(total // batch):
        pairs = strategy.next_pairs(n, counts, batch)
        asked += pairs
        for i, j in pairs:
            if truth[i] - truth[j] + rng.normal(0.0, JOD_NOISE_SD) > 0:
                counts[i, j] += 1
            else:
                counts[j, i] += 1
    strategy.next_pairs(n, counts, 1)  # feed the last batch's answers
    return truth, strategy, counts, asked


def test_closed_loop_recovers_the_ranking() -> None:
    """150 comparisons of 12 clips in batches of 5 rank them with Kendall tau >= 0.7."""
    truth, strategy, counts, asked = _closed_loop(SEED)
    assert len(asked) == 150
    assert int(counts.sum()) == 150 == len(strategy.campaign_.log)
    estimate = strategy.campaign_.posterior.item_mean.numpy()
    assert kendalltau(estimate, truth).statistic >= 0.7
    # Every clip was compared.
    assert {k for pair in asked for k in pair} == set(range(N))


def test_same_seed_same_pairs() -> None:
    """The same seed gives identical pair sequences and posteriors; another seed differs."""
    _, first, _, asked = _closed_loop(SEED, total=60)
    _, second, _, again = _closed_loop(SEED, total=60)
    assert asked == again
    assert torch.equal(first.campaign_.posterior.mean, second.campaign_.posterior.mean)
    _, _, _, other = _closed_loop(SEED + 1, total=60)
    assert asked != other
