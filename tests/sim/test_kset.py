"""K-set raters, the rater-time model and the K-set scenario (sim.raters, sim.kset)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import integrate, stats

from engine.questions import KSet
from sim.kset import KSetScenario, RaterTime, run_kset
from sim.raters import RaterPool, RaterSpec


def _pool(**overrides: float) -> RaterPool:
    spec = RaterSpec(n_raters=3, concurrent=1, noise_spread=0.0, **overrides)
    return RaterPool(spec, np.random.default_rng(0))


def test_a_noise_free_rater_answers_the_true_order() -> None:
    pool = _pool(noise_sd=1e-12)
    rng = np.random.default_rng(1)
    quality = np.array([0.3, 2.0, -1.0, 0.9])
    items = (10, 11, 12, 13)
    assert pool.answer_kset(quality, items, "best", 0, rng) == (11,)
    assert pool.answer_kset(quality, items, "best_worst", 0, rng) == (11, 12)
    assert pool.answer_kset(quality, items, "rank", 0, rng) == (11, 13, 10, 12)


def _best_probability(quality: np.ndarray, best: int, noise_sd: float) -> float:
    """P(clip `best` is seen best) under y_k = q_k + e_k, e_k ~ N(0, sigma^2 / 2): by
    quadrature over the best's own noise."""
    scale = noise_sd / math.sqrt(2)
    others = np.delete(quality, best)

    def integrand(t: float) -> float:
        return stats.norm.pdf(t) * np.prod(
            stats.norm.cdf((quality[best] + scale * t - others) / scale)
        )

    return integrate.quad(integrand, -10, 10)[0]


def test_best_of_k_frequencies_are_thurstonian() -> None:
    pool = _pool(noise_sd=1.5)
    rng = np.random.default_rng(2)
    quality = np.array([0.0, 0.5, 1.2])
    draws = 20_000
    counts = np.zeros(3)
    for _ in range(draws):
        (best,) = pool.answer_kset(quality, (0, 1, 2), "best", 0, rng)
        counts[best] += 1
    want = [_best_probability(quality, b, 1.5) for b in range(3)]
    # binomial sd at 20,000 draws is <= 0.0036: 4 sd
    np.testing.assert_allclose(counts / draws, want, atol=0.015)


def test_a_random_clicker_gives_valid_answers_of_every_kind() -> None:
    pool = _pool(random_fraction=1.0)
    rng = np.random.default_rng(3)
    question = KSet((4, 5, 6, 7), "rank")
    seen = {pool.answer_kset(np.zeros(4), question.items, "rank", 0, rng) for _ in range(400)}
    assert len(seen) == 24  # every order
    for answer in seen:
        question.comparisons(answer)  # valid: raises otherwise


def test_the_rater_time_model() -> None:
    time = RaterTime()
    assert time.mean_seconds(KSet((0, 1, 2, 3))) == 4 + 2.5 * 4
    assert time.mean_seconds(KSet((0, 1, 2), "rank")) == 4 + 4 * 3
    rng = np.random.default_rng(4)
    draws = [time.seconds(KSet((0, 1, 2)), rng) for _ in range(20_000)]
    assert abs(np.mean(draws) / 11.5 - 1) < 0.01  # the log-normal factor has mean 1


def test_a_kset_run_is_deterministic_and_learns_the_seconds() -> None:
    scenario = KSetScenario(
        n_items=24, sizes=(2, 3, 4), target_tau=0.99, max_tasks_per_item=4, check_every_per_item=0.5
    )
    first, again = run_kset(scenario, 7), run_kset(scenario, 7)
    assert repr(first) == repr(again)  # NaN != NaN: compare the printed records
    assert first["tasks"] == 96 and math.isnan(first["tasks_to_target"])  # 0.99 is not reached
    mix = first["task_mix"]
    assert sum(mix.values()) == 96 and any(kind.startswith("kset") for kind in mix)
    learned = first["learned_seconds"]
    # the clock moved from its prior toward the raters' times (the same means here): close
    for kind, seconds in learned.items():
        size = 2 if kind == "pair" else int(kind.split(":")[-1])
        truth = 6.0 if size == 2 else 4 + 2.5 * size
        assert abs(seconds / truth - 1) < 0.25


def test_a_kset_run_reaches_an_easy_target_and_reports_it() -> None:
    scenario = KSetScenario(n_items=24, sizes=(2, 3), target_tau=0.5, max_tasks_per_item=20)
    result = run_kset(scenario, 1)
    assert 0 < result["tasks_to_target"] <= result["tasks"] <= 480
    assert result["comparisons_to_target"] >= result["tasks_to_target"]
    assert result["final_tau"] >= 0.5
    assert 0 < result["hours_to_target"] < result["tasks"] * 20 / 3600


def test_a_slower_kset_is_chosen_less() -> None:
    """The engine learns the raters' seconds: K-sets that take the raters long lose to pairs."""
    base = KSetScenario(n_items=24, sizes=(2, 4), target_tau=0.99, max_tasks_per_item=4)
    slow = dataclasses.replace(base, time=RaterTime(kset_base=60.0))
    quick, late = run_kset(base, 3)["task_mix"], run_kset(slow, 3)["task_mix"]
    assert late.get("kset:4", 0) < quick.get("kset:4", 0)


@pytest.mark.parametrize("mode", ["best", "best_worst", "rank"])
def test_every_mode_runs(mode: str) -> None:
    scenario = KSetScenario(
        n_items=12, sizes=(3,), mode=mode, target_tau=0.99, max_tasks_per_item=1
    )
    assert run_kset(scenario, 0)["task_mix"] == {"kset:3": 12}
