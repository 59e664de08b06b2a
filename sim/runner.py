"""Run strategies against worlds: labels in, metric records out, in parallel when asked.

One run = one world (drawn from a scenario and a repetition's seed) x one strategy. Raters
work at once: `concurrent` assignments are out at any time, the oldest is answered next, so a
strategy always chooses while others' pairs are pending. At each checkpoint of the label
budget, and at `PER_CLIP` labels per clip, the labels so far are scored twice:
  - "fixed": the MAP Thurstone fit that ignores the reward model (sim.estimators), and
  - "engine": the engine's posterior with the reward-model prior, fed every label in order,
    with who answered it (`sim.campaigns.build_scoring_campaign`: the prior's split refitted,
    random clickers and each rater's noise learned).
The same seed gives the same records on the CPU.
"""

from __future__ import annotations

import math
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine import Judgment, NoEligibleTaskError, Outcome, predict_pair
from engine.adapters import JOD_NOISE_SD
from engine.questions import BOTH_BAD, BOTH_GOOD
from sim import metrics
from sim.campaigns import ScoringOptions, build_scoring_campaign
from sim.estimators import fit_thurstone
from sim.strategies import make_strategy
from sim.worlds import ReplayWorld, SyntheticSpec, SyntheticWorld, World, load_comparisons

ESTIMATORS = ("fixed", "engine")
N_HELD_OUT = 2000
# "both good" and "both bad" are ties to the win counts of the fixed fit
SIGN = {Outcome.WIN: 1.0, Outcome.TIE: 0.0, Outcome.LOSS: -1.0, BOTH_GOOD: 0.0, BOTH_BAD: 0.0}
# labels per clip at which every run is scored, whatever its checkpoint spacing, and before
# which no run stops: the points where estimates are compared with random pairs'
PER_CLIP = (0.25, 0.5, 1.0, 2.0, 5.0)
TARGETS: dict[str, tuple[str, float]] = {
    # metric: (direction, value); labels needed to reach each is the headline figure
    "kendall_tau": (">=", 0.9),
    "rmse": ("<=", 0.5),
}


@dataclass(frozen=True)
class ReplaySpec:
    """Recorded comparisons to replay (see `sim.worlds.load_comparisons` for the columns)."""

    path: str
    name: str = "recorded"
    rater: str = "observer"
    first: str = "condition_A"
    second: str = "condition_B"
    choice: str = "is_A_selected"
    group: str | None = "scene"

    def to_dict(self) -> dict[str, object]:
        return {"kind": "replay", **asdict(self)}


@dataclass(frozen=True)
class Scenario:
    """A named world recipe with its label budget and checkpoint spacing.

    Attributes:
        name: label in records and tables.
        world: a synthetic spec or a replay spec.
        budget: labels per run (a replay also stops when its log is used up).
        every: labels between checkpoints.
    """

    name: str
    world: SyntheticSpec | ReplaySpec
    budget: int
    every: int

    def __post_init__(self) -> None:
        if self.budget < 1 or self.every < 1:
            raise ValueError("budget and checkpoint spacing must be >= 1")

    def checkpoints(self) -> list[int]:
        return sorted({*range(0, self.budget, self.every), self.budget})

    def build(self, seed: int) -> World:
        if isinstance(self.world, ReplaySpec):
            spec = self.world
            data = load_comparisons(
                spec.path,
                rater=spec.rater,
                first=spec.first,
                second=spec.second,
                choice=spec.choice,
                group=spec.group,
            )
            return ReplayWorld(data, seed, name=spec.name)
        return SyntheticWorld(self.world, seed)

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "budget": self.budget,
            "every": self.every,
            "world": self.world.to_dict(),
        }


@dataclass(frozen=True)
class RunKey:
    """One unit of work: a scenario, a strategy and a repetition under a base seed."""

    scenario: Scenario
    strategy: str
    rep: int
    seed: int
    stop_at_targets: bool = False
    scoring: ScoringOptions = field(default_factory=ScoringOptions)  # the posterior's lapses


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from a base seed and names (stable across processes and machines)."""
    words = [p if isinstance(p, int) else zlib.crc32(p.encode()) for p in parts]
    return int(np.random.SeedSequence(words).generate_state(2, np.uint64)[0] >> np.uint64(1))


class Scorer:
    """Keeps both estimators' inputs up to date and scores them against the truth.

    Args:
        world: the truth and the problem.
        seed: draws the held-out pairs of the log loss.
        scoring: the engine posterior's lapse model (sim.campaigns.build_scoring_campaign).
    """

    def __init__(self, world: World, seed: int, scoring: ScoringOptions | None = None) -> None:
        problem = world.problem
        self.world = world
        self.groups = problem.groups if problem.pair_scope == "group" else None
        self.counts = np.zeros((problem.n_items, problem.n_items))
        self.fixed_start: np.ndarray | None = None
        self.campaign = build_scoring_campaign(problem, scoring)
        rng = np.random.default_rng(seed)
        held = problem.candidates[rng.integers(len(problem.candidates), size=N_HELD_OUT)]
        self.held_first, self.held_second = held[:, 0], held[:, 1]
        difference = world.quality[self.held_first] - world.quality[self.held_second]
        self.truth_log_p, _ = metrics.thurstone_log_probabilities(difference, 0.0, JOD_NOISE_SD)
        self.forced_choice = torch.zeros(1, dtype=torch.float64)

    def observe(self, first: int, second: int, outcome: Outcome, rater: int | None = None) -> None:
        sign = SIGN[outcome]
        self.counts[first, second] += (1 + sign) / 2
        self.counts[second, first] += (1 - sign) / 2
        self.campaign.observe([Judgment.pair(rater, first, second, outcome)])

    def observe_rating(self, item: int, level: int) -> None:
        self.campaign.observe([Judgment.rating(None, item, level)])

    def score(self) -> dict[str, dict[str, float]]:
        fit = fit_thurstone(self.counts, start=self.fixed_start)
        self.fixed_start = fit.mean
        held_difference = fit.mean[self.held_first] - fit.mean[self.held_second]
        held_var = (
            fit.cov[self.held_first, self.held_first]
            + fit.cov[self.held_second, self.held_second]
            - 2 * fit.cov[self.held_first, self.held_second]
        )
        fixed = self._metrics(
            fit.mean,
            fit.cov,
            *metrics.thurstone_log_probabilities(held_difference, held_var, JOD_NOISE_SD),
            weights=None,
        )
        posterior = self.campaign.posterior
        probabilities = predict_pair(
            posterior,
            torch.from_numpy(self.held_first),
            torch.from_numpy(self.held_second),
            JOD_NOISE_SD**2,
            self.forced_choice,
        ).numpy()  # held-out x (loss, win)
        log_p = np.log(np.clip(probabilities, 1e-300, None))
        weights = None
        if self.world.true_weights is not None and self.campaign.config.criteria:
            by_name = dict(
                zip(self.campaign.context_names, self.campaign.weights().context_mean, strict=True)
            )
            weights = np.stack([by_name[c].numpy() for c in range(len(self.world.true_weights))])
        engine = self._metrics(
            posterior.item_mean.numpy(),
            posterior.item_cov.numpy(),
            log_p[:, 1],
            log_p[:, 0],
            weights=weights,
        )
        return {"fixed": fixed, "engine": engine}

    def _metrics(
        self,
        mean: np.ndarray,
        cov: np.ndarray,
        log_p_first: np.ndarray,
        log_p_second: np.ndarray,
        weights: np.ndarray | None,
    ) -> dict[str, float]:
        truth, groups = self.world.quality, self.groups
        return {
            "kendall_tau": metrics.kendall_tau(mean, truth, groups),
            "spearman": metrics.spearman(mean, truth, groups),
            "rmse": metrics.rmse(mean, truth, groups),
            "top_k": metrics.top_k_precision(mean, truth, groups),
            "log_loss": metrics.expected_log_loss(log_p_first, log_p_second, self.truth_log_p),
            "weight_rmse": metrics.weight_rmse(weights, self.world.true_weights),
            "coverage50": metrics.coverage(mean, cov, truth, groups, level=0.5),
            "coverage90": metrics.coverage(mean, cov, truth, groups),
        }


def _reached(row: dict[str, float]) -> set[str]:
    return {
        name
        for name, (direction, value) in TARGETS.items()
        if (row[name] >= value if direction == ">=" else row[name] <= value)
    }


def run_once(key: RunKey) -> list[dict[str, object]]:
    """Run one strategy on one drawn world; one record per checkpoint and estimator.

    Torch runs single-threaded meanwhile: runs are parallel processes, and threads inside them
    only contend (small matrices).

    Raises:
        KeyError: an unknown strategy.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(key)
    finally:
        torch.set_num_threads(threads)


def _run(key: RunKey) -> list[dict[str, object]]:
    scenario = key.scenario
    world_seed = derive_seed(key.seed, scenario.name, key.rep)
    world = scenario.build(world_seed)
    strategy = make_strategy(key.strategy, world.problem, derive_seed(world_seed, key.strategy))
    scorer = Scorer(world, derive_seed(world_seed, "held-out"), key.scoring)
    rng = np.random.default_rng(derive_seed(world_seed, key.strategy, "answers"))
    problem = world.problem
    slot = np.full((problem.n_items, problem.n_items), -1, dtype=np.int64)
    slot[problem.candidates[:, 0], problem.candidates[:, 1]] = np.arange(len(problem.candidates))
    pending_count = np.zeros(len(problem.candidates), dtype=np.int64)
    budget = min(scenario.budget, world.budget or scenario.budget)
    points = per_clip_labels(problem.n_items, budget)
    checkpoints = deque(sorted({*scenario.checkpoints(), *points}))
    scored_through = max(points, default=0)
    concurrent = getattr(getattr(world, "raters", None), "spec", None)
    n_concurrent = concurrent.concurrent if concurrent else 4
    n_raters = concurrent.n_raters if concurrent else n_concurrent
    records: list[dict[str, object]] = []
    reached: dict[str, set[str]] = {e: set() for e in ESTIMATORS}
    outstanding: deque[tuple[int, int, int]] = deque()
    busy: set[int] = set()
    labels, strategy_seconds = 0, 0.0

    def hand_out() -> bool:
        nonlocal strategy_seconds
        idle = [r for r in range(n_raters) if r not in busy]
        rater = int(idle[rng.integers(len(idle))])
        available = world.available(pending_count)
        if available is not None and not available.any():
            return False
        started = time.perf_counter()
        try:
            first, second = strategy.propose(rater, available)
        except (LookupError, NoEligibleTaskError):
            return False
        strategy_seconds += time.perf_counter() - started
        low, high = min(first, second), max(first, second)
        if slot[low, high] < 0 or (available is not None and not available[slot[low, high]]):
            raise RuntimeError(f"{key.strategy} proposed an ineligible pair ({first}, {second})")
        pending_count[slot[low, high]] += 1
        outstanding.append((rater, first, second))
        busy.add(rater)
        return True

    def checkpoint() -> bool:
        scores = scorer.score()
        for estimator, values in scores.items():
            records.append(
                {
                    "scenario": scenario.name,
                    "strategy": key.strategy,
                    "rep": key.rep,
                    "seed": key.seed,
                    "labels": labels,
                    "estimator": estimator,
                    **values,
                    "strategy_seconds": strategy_seconds,
                }
            )
            reached[estimator] |= _reached(values)
        return (
            key.stop_at_targets
            and labels >= scored_through
            and all(reached[e] == set(TARGETS) for e in ESTIMATORS)
        )

    for _ in range(min(n_concurrent, budget)):
        if not hand_out():
            break
    while True:
        if checkpoints and labels == checkpoints[0]:
            checkpoints.popleft()
            if checkpoint():
                break
        if labels >= budget or not outstanding:
            break
        rater, first, second = outstanding.popleft()
        busy.discard(rater)
        pending_count[slot[min(first, second), max(first, second)]] -= 1
        left = world.shown_left(first, second, rng)
        outcome, who = world.answer_pair(first, second, rater, rng, left)
        started = time.perf_counter()
        strategy.observe(first, second, outcome, who, left)
        strategy_seconds += time.perf_counter() - started
        scorer.observe(first, second, outcome, who)
        labels += 1
        if labels + len(outstanding) < budget:
            hand_out()
    if labels not in {r["labels"] for r in records}:
        checkpoint()  # a replay that ran out of answers: score what there is
    return records


def per_clip_labels(n_items: int, budget: int) -> list[int]:
    """The label counts of `PER_CLIP` labels per clip for `n_items` clips, within `budget`."""
    return sorted({c for c in (round(f * n_items) for f in PER_CLIP) if 0 < c <= budget})


def labels_to_target(
    labels: Sequence[int], values: Sequence[float], direction: str, target: float
) -> float:
    """Labels at which a metric first reaches the target, linearly interpolated between
    checkpoints; NaN when it never does."""
    hit = [k for k, v in enumerate(values) if (v >= target if direction == ">=" else v <= target)]
    if not hit:
        return math.nan
    k = hit[0]
    if k == 0:
        return float(labels[0])
    x0, x1, y0, y1 = labels[k - 1], labels[k], values[k - 1], values[k]
    if y1 == y0:
        return float(x1)
    return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0))


def run_many(
    keys: Iterable[RunKey],
    *,
    jobs: int = 1,
    address: str | None = None,
    progress: Callable[[RunKey, list[dict[str, object]]], None] | None = None,
) -> list[dict[str, object]]:
    """Run every key and return all records in key order.

    Args:
        keys: the runs.
        jobs: local worker processes (1 = in this process).
        address: a Ray ("ray://host:port" or "ray:auto") or Dask ("tcp://host:port")
            scheduler to run on instead of local processes; runs through joblib's backend.
        progress: called with each key and its records as its run finishes.
    """
    from sim.parallel import map_runs

    keys = list(keys)
    results = map_runs(run_once, keys, jobs=jobs, address=address, progress=progress)
    return [row for rows in results for row in rows]


def default_replay_path() -> Path:
    """The recorded tone-mapped video comparisons shipped with sim (from pwcmp, MIT licence:
    sim/data/LICENSE-pwcmp.txt)."""
    return Path(__file__).resolve().parent / "data" / "tmo_video_comparisons.csv"


__all__ = [
    "ESTIMATORS",
    "PER_CLIP",
    "TARGETS",
    "ReplaySpec",
    "RunKey",
    "Scenario",
    "Scorer",
    "default_replay_path",
    "derive_seed",
    "labels_to_target",
    "per_clip_labels",
    "run_many",
    "run_once",
]
