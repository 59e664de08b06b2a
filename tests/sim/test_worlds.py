"""Worlds: the synthetic model's stated statistics, CSV loading, and replay bookkeeping."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import Outcome
from sim.estimators import outcome_signs
from sim.raters import RaterSpec
from sim.runner import default_replay_path
from sim.worlds import (
    Comparisons,
    ReplayWorld,
    SyntheticSpec,
    SyntheticWorld,
    candidate_pairs,
    load_comparisons,
)
from tests.sim.reference import reference_map

SEED = 0
FLIP = {Outcome.WIN: Outcome.LOSS, Outcome.LOSS: Outcome.WIN, Outcome.TIE: Outcome.TIE}
BIG = {"n_items": 4000, "n_groups": 40, "n_contexts": 4, "criteria_share": 0.9}


def _standardised(scores: np.ndarray) -> np.ndarray:
    """Per-campaign standardisation, as the engine does: (raw - mean) / sd (ddof=1)."""
    return (scores - scores.mean(axis=0)) / scores.std(axis=0, ddof=1)


def _fisher_bound(r: float, target: float, n: int, sds: float = 4.0) -> bool:
    """|atanh r - atanh target| <= sds / sqrt(n - 3) (Fisher's z, exact enough for n >= 100)."""
    return abs(math.atanh(r) - math.atanh(target)) <= sds / math.sqrt(n - 3)


# --------------------------------------------------------------------------- synthetic worlds


@pytest.fixture(scope="module", params=[0.0, 0.5, 0.9], ids=lambda r: f"rho{r}")
def big_world(request: pytest.FixtureRequest) -> SyntheticWorld:
    return SyntheticWorld(SyntheticSpec(rm_correlation=request.param, **BIG), SEED)


def test_reward_model_correlation_matches_target(big_world: SyntheticWorld) -> None:
    target = big_world.spec.rm_correlation
    r = np.corrcoef(big_world.rm_quality, big_world.quality)[0, 1]
    assert abs(r - target) < 0.04
    contexts = big_world.problem.contexts
    for k in range(big_world.spec.n_contexts):
        inside = contexts == k
        r_k = np.corrcoef(big_world.rm_quality[inside], big_world.quality[inside])[0, 1]
        assert abs(r_k - target) < 0.1
        assert _fisher_bound(r_k, target, int(inside.sum())), (k, r_k)


def test_reward_model_correlation_pooled_over_seeds() -> None:
    """Ten worlds pooled (Fisher z): tight enough to tell `rm_correlation` from, e.g.,
    `rm_correlation * sqrt(share)` (0.474 instead of 0.5)."""
    for target in (0.5, 0.9):
        spec = SyntheticSpec(
            n_items=2000, n_groups=20, n_contexts=4, rm_correlation=target, criteria_share=0.9
        )
        z = [
            math.atanh(np.corrcoef(w.rm_quality, w.quality)[0, 1])
            for w in (SyntheticWorld(spec, SEED + s) for s in range(10))
        ]
        assert abs(np.mean(z) - math.atanh(target)) < 4 / math.sqrt(10 * (2000 - 3))


def test_quality_sd(big_world: SyntheticWorld) -> None:
    assert np.std(big_world.quality, ddof=1) == pytest.approx(big_world.spec.quality_sd, rel=0.05)
    assert abs(np.mean(big_world.quality)) < 4 * big_world.spec.quality_sd / math.sqrt(4000)


def test_true_weights_are_regression_on_standardised_scores(big_world: SyntheticWorld) -> None:
    spec, problem = big_world.spec, big_world.problem
    assert big_world.true_weights is not None
    assert big_world.true_weights.shape == (spec.n_contexts, spec.n_criteria)
    z = _standardised(problem.scores)
    for k in range(spec.n_contexts):
        inside = problem.contexts == k
        design = np.column_stack([np.ones(inside.sum()), z[inside]])
        coef, residual, *_ = np.linalg.lstsq(design, big_world.quality[inside], rcond=None)
        sigma2 = residual[0] / (inside.sum() - design.shape[1])
        se = np.sqrt(np.diag(np.linalg.inv(design.T @ design)) * sigma2)[1:]
        t = (coef[1:] - big_world.true_weights[k]) / se
        assert np.all(np.abs(t) < 4.0), (k, t)
        # the explained share is rho^2: R^2 of this regression
        r2 = 1 - residual[0] / np.sum(
            (big_world.quality[inside] - big_world.quality[inside].mean()) ** 2
        )
        assert r2 == pytest.approx(spec.rm_correlation**2, abs=0.06)


def test_true_weights_norm() -> None:
    """|true_weights_k| = lam |w_k| = rm_correlation * quality_sd in every context."""
    spec = SyntheticSpec(rm_correlation=0.6, quality_sd=2.0, criteria_share=0.8)
    world = SyntheticWorld(spec, SEED)
    np.testing.assert_allclose(np.linalg.norm(world.true_weights, axis=1), 0.6 * 2.0, rtol=1e-12)


def test_contexts_differ_with_spread() -> None:
    spread = SyntheticWorld(
        SyntheticSpec(n_contexts=3, rm_correlation=0.7, context_spread=0.7), SEED
    ).true_weights
    unit = spread / np.linalg.norm(spread, axis=1, keepdims=True)
    cosine = unit @ unit.T
    assert np.all(cosine[np.triu_indices(3, k=1)] < 0.99)
    same = SyntheticWorld(
        SyntheticSpec(n_contexts=3, rm_correlation=0.7, context_spread=0.0), SEED
    ).true_weights
    np.testing.assert_allclose(same, np.broadcast_to(same[0], same.shape), atol=1e-12)


def test_groups_contexts_and_candidates() -> None:
    spec = SyntheticSpec(n_items=12, n_groups=4, n_contexts=2, pair_scope="group")
    problem = SyntheticWorld(spec, SEED).problem
    np.testing.assert_array_equal(problem.groups, np.repeat(np.arange(4), 3))
    np.testing.assert_array_equal(problem.contexts, problem.groups % 2)
    expected = {
        (i, j)
        for i in range(12)
        for j in range(i + 1, 12)
        if problem.groups[i] == problem.groups[j]
    }
    assert {tuple(p) for p in problem.candidates.tolist()} == expected
    assert len(problem.candidates) == len(expected)
    any_scope = candidate_pairs(problem.groups, "any")
    assert len(any_scope) == 12 * 11 // 2 and np.all(any_scope[:, 0] < any_scope[:, 1])


@given(st.lists(st.integers(0, 5), max_size=30))
def test_group_candidates_are_every_same_group_pair_in_order(groups) -> None:
    """Built group by group, the candidates are the same-group pairs of all pairs i < j, in
    the same (lexicographic) order, whatever the groups' sizes and labels."""
    labels = np.asarray(groups, dtype=np.int64)
    first, second = np.triu_indices(len(labels), k=1)
    same = labels[first] == labels[second]
    expected = np.stack((first[same], second[same]), axis=1)
    got = candidate_pairs(labels, "group")
    assert got.dtype == np.int64 and got.shape == (len(expected), 2)
    np.testing.assert_array_equal(got, expected)


def test_missing_scores_fraction() -> None:
    for fraction in (0.0, 0.3):
        world = SyntheticWorld(SyntheticSpec(missing_scores=fraction, **BIG), SEED)
        missing = np.isnan(world.problem.scores)
        se = math.sqrt(max(fraction * (1 - fraction), 1e-12) / missing.size)
        assert abs(missing.mean() - fraction) <= 4 * se


def test_no_criteria_world() -> None:
    world = SyntheticWorld(SyntheticSpec(n_criteria=0), SEED)
    assert world.problem.scores is None and world.true_weights is None
    assert world.problem.criteria == ()
    assert np.std(world.quality, ddof=1) == pytest.approx(1.5, rel=0.25)


def test_same_seed_same_world() -> None:
    spec = SyntheticSpec(rm_correlation=0.5)
    a, b, c = SyntheticWorld(spec, SEED), SyntheticWorld(spec, SEED), SyntheticWorld(spec, SEED + 1)
    np.testing.assert_array_equal(a.quality, b.quality)
    np.testing.assert_array_equal(a.problem.scores, b.problem.scores)
    assert not np.allclose(a.quality, c.quality)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rm_correlation": 0.95, "criteria_share": 0.9},  # > sqrt(0.9) = 0.949
        {"rm_correlation": 0.1, "n_criteria": 0},
        {"rm_correlation": -0.1},
        {"pair_scope": "prompt"},
        {"pair_scope": "group", "n_items": 10, "n_groups": 6},
        {"n_items": 1, "n_groups": 1, "n_contexts": 1},
        {"n_groups": 0},
        {"n_contexts": 11, "n_groups": 10},
        {"n_criteria": -1},
        {"criteria_share": 0.0},
        {"criteria_share": 1.1},
        {"quality_sd": 0.0},
        {"missing_scores": 1.0},
        {"missing_scores": -0.1},
    ],
)
def test_spec_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SyntheticSpec(**kwargs)


def test_spec_boundary_is_allowed() -> None:
    SyntheticSpec(rm_correlation=math.sqrt(0.81), criteria_share=0.81)
    SyntheticSpec(pair_scope="group", n_items=20, n_groups=10)


# --------------------------------------------------------------------------- loading


def test_load_shipped_comparisons() -> None:
    data = load_comparisons(default_replay_path())
    assert len(data.items) == 35
    assert len(set(data.groups)) == 5
    assert len(data.outcome) == len(data.first) == len(data.second) == len(data.rater) == 1213
    assert all(name.count("/") == 1 for name in data.items)
    assert all(name.split("/")[0] == g for name, g in zip(data.items, data.groups, strict=True))
    assert "window/tmo_camera" in data.items
    assert np.all(data.first != data.second)
    # every comparison is within its scene
    groups = np.array(data.groups)
    assert np.all(groups[data.first] == groups[data.second])
    assert set(data.outcome) == {Outcome.WIN, Outcome.LOSS}
    assert sum(o is Outcome.WIN for o in data.outcome) == 640


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


CUSTOM = """who,left,right,pick,prompt
r1,x,y,A,p1
r2,y,x,tie,p1
r1,x,z,B,p1
r2,x,y,first,p2
r3,y,x,second,p2
r1,x,y,TRUE,p2
r3,x,y,0.5,p1
r2,z,y,0,p1
"""


def test_load_custom_columns(tmp_path: Path) -> None:
    path = _write(tmp_path / "custom.csv", CUSTOM)
    data = load_comparisons(
        path, rater="who", first="left", second="right", choice="pick", group="prompt"
    )
    assert data.items == ("p1/x", "p1/y", "p1/z", "p2/x", "p2/y")
    assert data.groups == ("p1", "p1", "p1", "p2", "p2")
    np.testing.assert_array_equal(data.first, [0, 1, 0, 3, 4, 3, 0, 2])
    np.testing.assert_array_equal(data.second, [1, 0, 2, 4, 3, 4, 1, 1])
    W, L, T = Outcome.WIN, Outcome.LOSS, Outcome.TIE
    assert data.outcome == (W, T, L, W, L, W, T, L)
    assert data.rater == ("r1", "r2", "r1", "r2", "r3", "r1", "r3", "r2")
    ungrouped = load_comparisons(
        path, rater="who", first="left", second="right", choice="pick", group=None
    )
    assert ungrouped.items == ("x", "y", "z") and ungrouped.groups == ("", "", "")


def test_load_errors(tmp_path: Path) -> None:
    columns = {
        "rater": "who",
        "first": "left",
        "second": "right",
        "choice": "pick",
        "group": "prompt",
    }
    bad_choice = _write(tmp_path / "choice.csv", CUSTOM.replace("r2,z,y,0,p1", "r2,z,y,maybe,p1"))
    with pytest.raises(ValueError, match=r"choice\.csv:9: unknown choice 'maybe'"):
        load_comparisons(bad_choice, **columns)
    with pytest.raises(ValueError, match=r"missing column.*'prompt'"):
        load_comparisons(
            _write(tmp_path / "cols.csv", CUSTOM.replace("prompt", "scene")), **columns
        )
    with pytest.raises(ValueError, match=r"missing column.*'observer'"):
        load_comparisons(_write(tmp_path / "default.csv", CUSTOM))
    itself = _write(tmp_path / "self.csv", CUSTOM.replace("r1,x,z,B,p1", "r1,z,z,B,p1"))
    with pytest.raises(ValueError, match=r"self\.csv:4: an item is compared with itself"):
        load_comparisons(itself, **columns)
    with pytest.raises(ValueError, match="no comparisons"):
        load_comparisons(_write(tmp_path / "empty.csv", "who,left,right,pick,prompt\n"), **columns)


# --------------------------------------------------------------------------- replay


@pytest.fixture(scope="module")
def shipped() -> Comparisons:
    return load_comparisons(default_replay_path())


def _log_by_pair(data: Comparisons) -> dict[tuple[int, int], Counter]:
    """Multiset of (outcome of the lower index, rater name) per unordered pair, from the log."""
    log: dict[tuple[int, int], Counter] = {}
    for a, b, outcome, who in zip(data.first, data.second, data.outcome, data.rater, strict=True):
        a, b = int(a), int(b)
        key = (min(a, b), max(a, b))
        log.setdefault(key, Counter())[(outcome if a < b else FLIP[outcome], who)] += 1
    return log


def test_replay_problem(shipped: Comparisons) -> None:
    world = ReplayWorld(shipped, SEED)
    log = _log_by_pair(shipped)
    assert {tuple(p) for p in world.problem.candidates.tolist()} == set(log)
    assert world.problem.pair_scope == "group"
    assert world.problem.tie_margin == 0.0
    assert world.budget == 1213 and world.problem.n_items == 35
    groups = world.problem.groups
    assert len(np.unique(groups)) == 5
    assert np.all(groups[world.problem.candidates[:, 0]] == groups[world.problem.candidates[:, 1]])


def test_replay_hands_out_exactly_the_log(shipped: Comparisons) -> None:
    world = ReplayWorld(shipped, SEED)
    log = _log_by_pair(shipped)
    rng = np.random.default_rng(SEED)
    seen: dict[tuple[int, int], Counter] = {}
    order = [pair for pair, answers in log.items() for _ in range(sum(answers.values()))]
    rng.shuffle(order)
    for low, high in order:
        swap = bool(rng.integers(2))
        first, second = (high, low) if swap else (low, high)
        outcome, who = world.answer_pair(first, second, rater=999, rng=rng)
        assert isinstance(who, int)
        normalised = FLIP[outcome] if swap else outcome
        seen.setdefault((low, high), Counter())[(normalised, world.rater_names[who])] += 1
    assert seen == log
    for low, high in log:
        for first, second in ((low, high), (high, low)):
            with pytest.raises(LookupError):
                world.answer_pair(first, second, 0, rng)
    assert not world.available(np.zeros(len(world.candidates), dtype=np.int64)).any()


def test_replay_unlogged_pair_raises(shipped: Comparisons) -> None:
    world = ReplayWorld(shipped, SEED)
    groups = world.problem.groups
    other = int(np.flatnonzero(groups != groups[0])[0])
    with pytest.raises(LookupError):
        world.answer_pair(0, other, 0, np.random.default_rng(SEED))


def test_replay_orientation_flips_the_same_record(tmp_path: Path) -> None:
    columns = {
        "rater": "who",
        "first": "left",
        "second": "right",
        "choice": "pick",
        "group": "prompt",
    }
    data = load_comparisons(_write(tmp_path / "custom.csv", CUSTOM), **columns)
    forward, backward = ReplayWorld(data, SEED), ReplayWorld(data, SEED)
    rng = np.random.default_rng(SEED)
    for low, high in [(0, 1), (0, 1), (0, 1), (3, 4), (0, 2), (1, 2), (3, 4), (3, 4)]:
        a, who_a = forward.answer_pair(low, high, 0, rng)
        b, who_b = backward.answer_pair(high, low, 0, rng)
        assert b is FLIP[a] and who_a == who_b


def test_replay_available(shipped: Comparisons) -> None:
    world = ReplayWorld(shipped, SEED)
    log = _log_by_pair(shipped)
    pairs = [tuple(p) for p in world.problem.candidates.tolist()]
    left = np.array([sum(log[p].values()) for p in pairs])
    rng = np.random.default_rng(SEED)
    for slot in range(5):  # exhaust a few pairs, then draw some others partly
        while left[slot]:
            world.answer_pair(*pairs[slot], 0, rng)
            left[slot] -= 1
    for _ in range(300):
        slot = int(rng.choice(np.flatnonzero(left > 0)))
        world.answer_pair(*pairs[slot], 0, rng)
        left[slot] -= 1
    assert (left == 0).sum() >= 5 and (left > 0).sum() >= 50
    np.testing.assert_array_equal(world.remaining_, left)
    for _ in range(5):
        pending = rng.integers(0, 12, size=len(pairs))
        np.testing.assert_array_equal(world.available(pending), left - pending > 0)
    np.testing.assert_array_equal(world.available(np.zeros(len(pairs), dtype=np.int64)), left > 0)


def test_replay_seed_orders_answers(shipped: Comparisons) -> None:
    """Different seeds hand the same pair's answers out in different orders (some pair)."""

    def sequence(seed: int) -> list[tuple[Outcome, int]]:
        world = ReplayWorld(shipped, seed)
        rng = np.random.default_rng(SEED)
        low, high = (int(v) for v in world.problem.candidates[0])
        return [world.answer_pair(low, high, 0, rng) for _ in range(int(world.remaining_[0]))]

    assert sequence(SEED) == sequence(SEED)
    assert any(sequence(SEED) != sequence(SEED + s) for s in range(1, 6))


def test_replay_ties_set_a_margin(tmp_path: Path) -> None:
    columns = {
        "rater": "who",
        "first": "left",
        "second": "right",
        "choice": "pick",
        "group": "prompt",
    }
    world = ReplayWorld(load_comparisons(_write(tmp_path / "c.csv", CUSTOM), **columns), SEED)
    assert world.problem.tie_margin > 0
    assert world.problem.pair_scope == "group"


def test_replay_truth_is_the_map_of_the_whole_log(shipped: Comparisons) -> None:
    world = ReplayWorld(shipped, SEED)
    expected = reference_map(
        len(shipped.items), shipped.first, shipped.second, outcome_signs(list(shipped.outcome))
    )
    np.testing.assert_allclose(world.quality, expected, atol=1e-4)


def test_a_world_answers_criterion_questions_by_its_true_criteria() -> None:
    raters = RaterSpec(criterion_noise_sd=1e-6, noise_spread=0.0)
    spec = SyntheticSpec(n_items=40, n_groups=10, rm_correlation=0.7, raters=raters)
    world = SyntheticWorld(spec, SEED)
    plain = SyntheticWorld(SyntheticSpec(n_items=40, n_groups=10, rm_correlation=0.7), SEED)
    np.testing.assert_array_equal(world.quality, plain.quality)
    rng = np.random.default_rng(SEED)
    values = world.criterion_values
    name = world.problem.criteria[2]
    for first, second in [(0, 1), (5, 9), (30, 12)]:
        outcome, _ = world.answer_criterion(first, second, name, 0, rng)
        expected = Outcome.WIN if values[first, 2] > values[second, 2] else Outcome.LOSS
        assert outcome == expected
    with pytest.raises(ValueError, match="no criterion"):
        world.answer_criterion(0, 1, "style", 0, rng)


def test_positive_weights_make_every_true_weight_positive() -> None:
    spec = SyntheticSpec(n_items=40, n_groups=10, rm_correlation=0.7, positive_weights=True)
    world = SyntheticWorld(spec, SEED)
    assert world.true_weights is not None and bool((world.true_weights >= 0).all())
