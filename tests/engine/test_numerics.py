"""engine.numerics against 50-digit mpmath, out to the far tails."""

from __future__ import annotations

import math

import mpmath as mp
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from engine.numerics import (
    binary_entropy_bits,
    entropy_bits,
    entropy_bits_of,
    interval_probabilities,
    log1mexp,
    log_ndtr_diff,
    log_ndtr_diff_scalar,
)
from tests.engine.reference import interval_probability, log_interval_probability

RTOL = 1e-10
GRID = [
    -math.inf,
    -40.0,
    -38.5,
    -20.0,
    -8.0,
    -1.0,
    -1e-3,
    0.0,
    1e-3,
    0.7,
    5.0,
    20.0,
    40.0,
    math.inf,
]


@pytest.mark.parametrize("lo", GRID)
@pytest.mark.parametrize("hi", GRID)
def test_log_ndtr_diff_matches_mpmath(lo: float, hi: float) -> None:
    if not lo < hi:
        return
    expected = log_interval_probability(lo, hi)
    got = float(log_ndtr_diff(torch.tensor(lo), torch.tensor(hi)))
    assert math.isfinite(got)
    assert got == pytest.approx(expected, rel=RTOL, abs=1e-12)


@pytest.mark.parametrize("lo", GRID)
@pytest.mark.parametrize("hi", GRID)
def test_scalar_log_ndtr_diff_matches_mpmath(lo: float, hi: float) -> None:
    """The Python-float form (sequential scalar work) is as accurate as the tensor form."""
    if not lo < hi:
        return
    got = log_ndtr_diff_scalar(lo, hi)
    assert math.isfinite(got)
    assert got == pytest.approx(log_interval_probability(lo, hi), rel=RTOL, abs=1e-12)


def test_log_ndtr_diff_of_an_empty_interval_is_minus_infinity() -> None:
    assert float(log_ndtr_diff(torch.tensor(1.5), torch.tensor(1.5))) == -math.inf
    assert log_ndtr_diff_scalar(1.5, 1.5) == -math.inf
    assert log_ndtr_diff_scalar(40.0, 40.0) == -math.inf


@given(st.floats(-40, 40), st.floats(1e-6, 30))
def test_log_ndtr_diff_random_intervals(lo: float, width: float) -> None:
    hi = lo + width
    got = float(log_ndtr_diff(torch.tensor(lo), torch.tensor(hi)))
    assert got == pytest.approx(log_interval_probability(lo, hi), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("x", [-1e-300, -1e-12, -0.3, -math.log(2), -0.9, -5.0, -50.0, -math.inf])
def test_log1mexp(x: float) -> None:
    expected = float(mp.log(-mp.expm1(x))) if x != -math.inf else 0.0
    assert float(log1mexp(torch.tensor(x))) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("x", [-40.0, -7.0, -1.0, 0.0, 0.3, 3.0, 40.0])
def test_binary_entropy_bits(x: float) -> None:
    p, q = mp.ncdf(x), mp.ncdf(-x)
    expected = float(-(p * mp.log(p, 2) + q * mp.log(q, 2)))
    assert float(binary_entropy_bits(torch.tensor(x))) == pytest.approx(
        expected, rel=1e-9, abs=1e-300
    )


def test_entropy_bits_treats_zero_probability_as_zero() -> None:
    log_p = torch.tensor([0.0, -math.inf, -math.inf])
    assert float(entropy_bits(log_p)) == 0.0
    uniform = torch.full((4,), math.log(0.25))
    assert float(entropy_bits(uniform)) == pytest.approx(2.0)


@pytest.mark.parametrize(
    "cuts",
    [
        [0.0],
        [-40.0, -38.5, -20.0],
        [-8.0, -1.0, -1e-3, 1e-3, 0.7],
        [5.0, 20.0, 40.0],
        [-math.inf, 0.7, math.inf],
    ],
)
def test_interval_probabilities_match_mpmath(cuts: list[float]) -> None:
    """Absolute error of a few ulp everywhere, relative accuracy below 0 (the lower tail)."""
    got = interval_probabilities(torch.tensor(cuts))
    edges = [-math.inf, *cuts, math.inf]
    for p, lo, hi in zip(got.tolist(), edges[:-1], edges[1:], strict=True):
        expected = float(interval_probability(lo, hi))
        assert p == pytest.approx(expected, rel=RTOL if hi <= 0 else 0.0, abs=5e-16)
    assert float(got.sum()) == pytest.approx(1.0, abs=1e-15)


def test_entropy_bits_of_probabilities_agrees_with_log_form() -> None:
    p = torch.tensor([0.5, 0.25, 0.25, 0.0])
    assert float(entropy_bits_of(p)) == pytest.approx(1.5)
    assert float(entropy_bits_of(p)) == pytest.approx(float(entropy_bits(torch.log(p))))
