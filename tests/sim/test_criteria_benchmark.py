"""benchmarks/criteria.py: the same seed gives the same records, and the arms differ only
where criterion questions are asked."""

from __future__ import annotations

from benchmarks.criteria import run
from sim.raters import RaterSpec
from sim.worlds import SyntheticSpec

SPEC = SyntheticSpec(
    n_items=16,
    n_groups=4,
    n_contexts=2,
    rm_correlation=0.7,
    pair_scope="group",
    positive_weights=True,
    raters=RaterSpec(criterion_noise_sd=0.7),
)


def _records(arm: str) -> list[dict]:
    records = run(arm, SPEC, 0, budget=40, every=20, seed=5)["records"]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def test_the_same_seed_gives_the_same_records() -> None:
    assert _records("criteria_all") == _records("criteria_all")


def test_criterion_questions_are_asked_only_where_their_gain_counts_them() -> None:
    everything = _records("criteria_all")
    assert everything[-1]["criterion_share"] > 0.3
    assert 0 <= everything[-1]["criterion_corr"] <= 1
    pairs = _records("pairs")
    assert pairs[-1]["criterion_share"] == 0 and "criterion_corr" not in pairs[-1]
