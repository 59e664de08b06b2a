"""Simulated raters against the Thurstone / ordered-probit probabilities they claim."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from scipy.stats import norm

from engine import Outcome
from engine.questions import BOTH_BAD, BOTH_GOOD
from sim.raters import RaterPool, RaterSpec

SEED = 0
DRAWS = 6000
SIGMA = 1.4826


def _pool(**kwargs: object) -> RaterPool:
    spec = RaterSpec(**{"n_raters": 5, "concurrent": 1, "noise_spread": 0.0, **kwargs})
    return RaterPool(spec, np.random.default_rng(SEED))


def _pair_frequencies(pool: RaterPool, d: float, draws: int = DRAWS) -> dict[Outcome, float]:
    rng = np.random.default_rng(SEED + 1)
    counts = Counter(pool.answer_pair(d, 0.0, r % pool.spec.n_raters, rng) for r in range(draws))
    return {o: counts[o] / draws for o in Outcome}


def _close(observed: float, p: float, n: int = DRAWS, sds: float = 4.0) -> bool:
    """Within `sds` binomial standard errors (floored so p = 0 or 1 still allows none)."""
    return abs(observed - p) <= sds * math.sqrt(max(p * (1 - p), 1e-4) / n)


@pytest.mark.parametrize("d", [0.0, 0.5, 1.0, 2.5, -1.5])
def test_forced_choice_win_rate_is_thurstone(d: float) -> None:
    pool = _pool()
    np.testing.assert_array_equal(pool.noise_sd, SIGMA)
    freq = _pair_frequencies(pool, d)
    assert freq[Outcome.TIE] == 0
    assert _close(freq[Outcome.WIN], norm.cdf(d / SIGMA)), freq


def test_one_jod_is_a_75_percent_preference() -> None:
    assert norm.cdf(1.0 / SIGMA) == pytest.approx(0.75, abs=1e-4)
    assert _close(_pair_frequencies(_pool(), 1.0, 20_000)[Outcome.WIN], 0.75, 20_000)


@pytest.mark.parametrize(
    ("d", "margin", "noise"), [(0.0, 0.5, SIGMA), (1.0, 0.8, SIGMA), (-0.7, 0.3, 0.6)]
)
def test_ties_inside_the_margin(d: float, margin: float, noise: float) -> None:
    freq = _pair_frequencies(_pool(tie_margin=margin, noise_sd=noise), d)
    tie = norm.cdf((margin - d) / noise) - norm.cdf((-margin - d) / noise)
    win = norm.sf((margin - d) / noise)
    assert _close(freq[Outcome.TIE], tie), (freq, tie)
    assert _close(freq[Outcome.WIN], win), (freq, win)
    assert _close(freq[Outcome.LOSS], 1 - tie - win)


@pytest.mark.parametrize("margin", [0.0, 0.5])
@pytest.mark.parametrize("d", [0.0, 4.0, -6.0])
def test_random_clickers_ignore_quality(d: float, margin: float) -> None:
    pool = _pool(random_fraction=1.0, tie_margin=margin)
    assert pool.is_random.all()
    freq = _pair_frequencies(pool, d)
    options = [Outcome.WIN, Outcome.LOSS] + ([Outcome.TIE] if margin else [])
    for outcome in Outcome:
        p = 1 / len(options) if outcome in options else 0.0
        assert _close(freq[outcome], p), (outcome, freq)


def test_random_fraction_marks_that_many_raters() -> None:
    pool = RaterPool(RaterSpec(n_raters=20, random_fraction=0.25), np.random.default_rng(SEED))
    assert pool.is_random.sum() == 5
    rng = np.random.default_rng(SEED)
    clicker = int(np.flatnonzero(pool.is_random)[0])
    honest = int(np.flatnonzero(~pool.is_random)[0])
    clicks = [pool.answer_pair(8.0, 0.0, clicker, rng) for _ in range(2000)]
    answers = [pool.answer_pair(8.0, 0.0, honest, rng) for _ in range(2000)]
    assert _close(clicks.count(Outcome.WIN) / 2000, 0.5, 2000)
    assert answers.count(Outcome.WIN) == 2000


@pytest.mark.parametrize("lapse", [0.2, 1.0])
def test_lapse_rate_mixes_in_uniform_clicks(lapse: float) -> None:
    d = 2.0
    freq = _pair_frequencies(_pool(lapse_rate=lapse), d)
    expected = (1 - lapse) * norm.cdf(d / SIGMA) + lapse / 2
    assert _close(freq[Outcome.WIN], expected), (freq, expected)
    with_ties = _pair_frequencies(_pool(lapse_rate=lapse, tie_margin=0.5), d)
    tie = norm.cdf((0.5 - d) / SIGMA) - norm.cdf((-0.5 - d) / SIGMA)
    assert _close(with_ties[Outcome.TIE], (1 - lapse) * tie + lapse / 3)


@pytest.mark.parametrize("quality", [-2.0, 0.0, 0.7, 3.0])
def test_emoji_levels_are_ordered_probit(quality: float) -> None:
    pool = _pool()
    thresholds = np.array(pool.spec.emoji_thresholds)
    rng = np.random.default_rng(SEED + 2)
    levels = np.array([pool.answer_rating(quality, r % 5, rng) for r in range(DRAWS)])
    cuts = np.concatenate([[-np.inf], thresholds, [np.inf]])
    probabilities = np.diff(norm.cdf((cuts - quality) / SIGMA))
    assert levels.min() >= 0 and levels.max() <= len(thresholds)
    for level, p in enumerate(probabilities):
        assert _close(np.mean(levels == level), p), (level, np.mean(levels == level), p)


def test_emoji_random_clicks_are_uniform() -> None:
    pool = _pool(lapse_rate=1.0, emoji_thresholds=(0.0, 1.0))
    rng = np.random.default_rng(SEED)
    levels = np.array([pool.answer_rating(10.0, 0, rng) for _ in range(3000)])
    for level in range(3):
        assert _close(np.mean(levels == level), 1 / 3, 3000)


def test_noise_spread_makes_raters_differ() -> None:
    pool = RaterPool(
        RaterSpec(n_raters=2000, noise_spread=0.3, noise_sd=1.0), np.random.default_rng(SEED)
    )
    logs = np.log(pool.noise_sd)
    assert abs(np.mean(logs)) < 4 * 0.3 / math.sqrt(2000)
    assert np.std(logs, ddof=1) == pytest.approx(0.3, rel=0.08)
    # a noisier rater is closer to a coin flip
    rng = np.random.default_rng(SEED)
    noisy, sharp = int(np.argmax(pool.noise_sd)), int(np.argmin(pool.noise_sd))
    for rater in (noisy, sharp):
        wins = sum(pool.answer_pair(1.0, 0.0, rater, rng) is Outcome.WIN for _ in range(4000))
        assert _close(wins / 4000, norm.cdf(1.0 / pool.noise_sd[rater]), 4000)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_raters": 0, "concurrent": 0},
        {"n_raters": 3, "concurrent": 4},
        {"concurrent": 0},
        {"noise_sd": 0.0},
        {"noise_sd": math.inf},
        {"noise_sd": math.nan},
        {"noise_spread": -0.1},
        {"lapse_rate": -0.01},
        {"lapse_rate": 1.5},
        {"random_fraction": 1.01},
        {"tie_margin": -0.1},
        {"tie_margin": math.inf},
        {"tie_margin": math.nan},
        {"emoji_thresholds": (0.0, 0.0)},
        {"emoji_thresholds": (1.0, 0.0)},
    ],
)
def test_spec_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RaterSpec(**kwargs)


def test_raters_say_both_good_or_both_bad_as_the_engine_models_it() -> None:
    """A tie is "both good" with probability P(q_i + q_j + sqrt(2) sigma e > 2 tau) given the
    tie: checked against that closed form on a pair of known qualities."""
    spec = RaterSpec(n_raters=1, concurrent=1, noise_spread=0.0, tie_margin=3.0, both_threshold=0.4)
    pool = RaterPool(spec, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    answers = [pool.answer_pair(0.5, 0.3, 0, rng) for _ in range(20_000)]
    ties = [a for a in answers if a in (BOTH_GOOD, BOTH_BAD, Outcome.TIE)]
    sigma = float(pool.noise_sd[0])
    expected_good = 1 - norm.cdf((2 * 0.4 - 0.8) / (math.sqrt(2) * sigma))
    expected_bad = norm.cdf((-2 * 0.4 - 0.8) / (math.sqrt(2) * sigma))
    assert ties.count(BOTH_GOOD) / len(ties) == pytest.approx(expected_good, abs=0.02)
    assert ties.count(BOTH_BAD) / len(ties) == pytest.approx(expected_bad, abs=0.02)
    with pytest.raises(ValueError, match="both_threshold"):
        RaterSpec(both_threshold=0.4)  # no ties


@pytest.mark.parametrize("d", [0.0, 0.7, -1.2])
def test_criterion_answers_are_thurstone_with_the_raters_criterion_noise(d: float) -> None:
    pool = _pool(criterion_noise_sd=0.6, tie_margin=0.2)
    np.testing.assert_array_equal(pool.criterion_noise_sd, 0.6)
    rng = np.random.default_rng(SEED + 2)
    counts = Counter(pool.answer_criterion(d, 0.0, r % 5, rng) for r in range(DRAWS))
    win = norm.sf((0.2 - d) / 0.6)
    loss = norm.cdf((-0.2 - d) / 0.6)
    assert _close(counts[Outcome.WIN] / DRAWS, win)
    assert _close(counts[Outcome.LOSS] / DRAWS, loss)


def test_criterion_noise_leaves_the_other_draws_alone() -> None:
    plain, with_criteria = _pool(noise_spread=0.3), _pool(noise_spread=0.3, criterion_noise_sd=1.0)
    np.testing.assert_array_equal(plain.noise_sd, with_criteria.noise_sd)
    assert not np.allclose(with_criteria.criterion_noise_sd, 1.0)  # spread per rater
    with pytest.raises(ValueError, match="no criterion questions"):
        plain.answer_criterion(1.0, 0.0, 0, np.random.default_rng(SEED))
