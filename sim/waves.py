"""Clips arriving in waves: do prompts added mid-campaign end as well measured as the first?

A synthetic world in prompts of `group_size` clips, pairs within a prompt (or any two), is
split by prompt into `n_waves` waves; wave w joins the campaign when the label count reaches
w / n_waves of the budget (the campaign's indices are the world's: prompts are contiguous).
Raters work a few at once (each holds one task; the oldest is answered next), and the engine
(`next_pairs`, its exposure rule at `min_labels`, engine.exposure) chooses every task. At each
checkpoint every wave that has arrived is scored apart by the engine's posterior: Kendall tau
and RMSE within prompts, the coverage of central 50 % and 90 % intervals, and the fewest and
the median labels a clip of the wave took. The strategy is the engine's; nothing here
re-derives a gain.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from engine import Judgment, NoEligibleTaskError, Task
from sim import metrics
from sim.campaigns import add_problem_clips, build_campaign
from sim.raters import RaterSpec
from sim.runner import derive_seed
from sim.worlds import SyntheticSpec, SyntheticWorld

LEVELS = (0.5, 0.9)  # central interval levels whose coverage is reported


@dataclass(frozen=True)
class WaveScenario:
    """One waves experiment.

    Attributes:
        n_items: clips, in prompts of `group_size`, split by prompt into `n_waves` waves.
        labels_per_item: the budget, in labels per clip of the whole campaign.
        every_per_item: labels between checkpoints, per clip.
        after_arrival: further checkpoints, in labels after each wave arrived.
        rm_correlation: the reward model's correlation with the truth (engine prior).
        min_labels: the campaign's floor of labels per clip (0: the rule off).
        pair_scope: "group" pairs clips of one prompt, "any" pairs any two.
        raters: the rater population (`concurrent` of them hold a task at any time).
    """

    n_items: int = 120
    group_size: int = 4
    n_waves: int = 3
    labels_per_item: float = 8.0
    every_per_item: float = 1.0
    after_arrival: tuple[int, ...] = ()
    rm_correlation: float = 0.5
    min_labels: int = 2
    pair_scope: str = "group"
    raters: RaterSpec = field(default_factory=RaterSpec)

    def __post_init__(self) -> None:
        n_groups = self.n_items // self.group_size
        if self.group_size < 2 or n_groups * self.group_size != self.n_items:
            raise ValueError("n_items must be a multiple of group_size >= 2")
        if not 1 <= self.n_waves <= n_groups:
            raise ValueError(f"n_waves must be in [1, {n_groups}] (one prompt at least each)")
        if self.labels_per_item <= 0 or self.every_per_item <= 0:
            raise ValueError("labels_per_item and every_per_item must be > 0")

    @property
    def budget(self) -> int:
        return round(self.labels_per_item * self.n_items)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def run_waves(scenario: WaveScenario, seed: int) -> dict[str, Any]:
    """One seeded run: a record per checkpoint and arrived wave (see the module), and the
    label counts at which the waves arrived. The world and the raters' answers depend on
    `seed` alone, so runs with and without the rule face the same clips."""
    n = scenario.n_items
    n_groups = n // scenario.group_size
    spec = SyntheticSpec(
        n_items=n,
        n_groups=n_groups,
        n_contexts=min(3, n_groups),
        rm_correlation=scenario.rm_correlation,
        pair_scope=scenario.pair_scope,
        raters=scenario.raters,
    )
    world = SyntheticWorld(spec, derive_seed(seed, "waves", "world"))
    problem = world.problem
    wave = problem.groups * scenario.n_waves // n_groups  # (n,) by prompt; prompts contiguous
    ends = np.searchsorted(wave, np.arange(scenario.n_waves), side="right")
    budget = scenario.budget
    arrivals = [round(w * budget / scenario.n_waves) for w in range(scenario.n_waves)]
    every = max(1, round(scenario.every_per_item * n))
    extra = {a + d for a in arrivals for d in scenario.after_arrival}
    rng = np.random.default_rng(derive_seed(seed, "waves", "answers"))
    campaign = build_campaign(
        problem, reward_model=True, min_labels=scenario.min_labels, items=int(ends[0])
    )
    records: list[dict[str, Any]] = []
    outstanding: deque[Task] = deque()
    raters = scenario.raters

    def hand_out() -> None:
        busy = {task.rater for task in outstanding}
        idle = [r for r in range(raters.n_raters) if r not in busy]
        for rater in rng.permutation(idle).tolist():
            try:
                outstanding.append(campaign.next_pairs(int(rater))[0])
                return
            except NoEligibleTaskError:  # this rater judged every pair of the arrived prompts
                continue

    def checkpoint(labels: int) -> None:
        posterior = campaign.posterior
        mean, cov = posterior.item_mean.numpy(), posterior.item_cov.numpy()
        counts = campaign.label_counts().numpy()
        for w in range(scenario.n_waves):
            if arrivals[w] > labels:  # not arrived yet (arrivals are added before this)
                continue
            start = 0 if w == 0 else int(ends[w - 1])
            clips = np.arange(start, int(ends[w]))
            truth, groups = world.quality[clips], problem.groups[clips]
            block = cov[np.ix_(clips, clips)]
            record: dict[str, Any] = {
                "labels": labels,
                "wave": w,
                "arrived_at": arrivals[w],
                "kendall_tau": metrics.kendall_tau(mean[clips], truth, groups),
                "rmse": metrics.rmse(mean[clips], truth, groups),
                "min_labels": int(counts[clips].min()),
                "median_labels": float(np.median(counts[clips])),
            }
            for level in LEVELS:
                record[f"coverage{round(100 * level)}"] = metrics.coverage(
                    mean[clips], block, truth, groups, level
                )
            records.append(record)

    for _ in range(raters.concurrent):
        hand_out()
    labels, arrived = 0, 1
    while True:
        while arrived < scenario.n_waves and arrivals[arrived] <= labels:
            add_problem_clips(campaign, problem, range(int(ends[arrived - 1]), int(ends[arrived])))
            arrived += 1
            while len(outstanding) < raters.concurrent:  # raters left idle by an exhausted scope
                before = len(outstanding)
                hand_out()
                if len(outstanding) == before:
                    break
        if labels % every == 0 or labels == budget or labels in extra:
            checkpoint(labels)
        if labels == budget or not outstanding:
            break
        task = outstanding.popleft()
        outcome, who = world.answer_pair(task.first, task.second, int(task.rater), rng)
        campaign.observe([Judgment.pair(who, task.first, task.second, outcome)], [task.id])
        labels += 1
        hand_out()
    return {
        "seed": seed,
        "min_labels": scenario.min_labels,
        "arrivals": arrivals,
        "labels": labels,
        "records": records,
    }


__all__ = ["LEVELS", "WaveScenario", "run_waves"]
