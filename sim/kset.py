"""K-set scenarios: labels and rater time to a Kendall tau target, pairs only or K-sets allowed.

A synthetic world in prompts of `group_size` clips; one rater at a time (drawn from the pool)
gets the task the engine's `choose_task` picks by gain per second (engine.task_choice), a pair
or a K-set of the prompt's clips, and answers it Thurstonian (sim.raters). How long each task
takes comes from a stated rater-time model (`RaterTime`); the engine does not know it and
learns seconds per task kind from the answer timestamps (`TaskClock`), as the service would
from shown-at and answered-at. The strategy is the engine's; nothing here re-derives a gain.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from engine import Judgment
from engine.questions import KSet, Level, Pair
from engine.task_choice import TaskClock, choose_task
from sim import metrics
from sim.campaigns import build_campaign
from sim.raters import RaterSpec
from sim.runner import derive_seed, labels_to_target
from sim.worlds import SyntheticSpec, SyntheticWorld


@dataclass(frozen=True)
class RaterTime:
    """The simulated raters' seconds per task: a pair `pair` s, a rating `rating` s, a K-set
    `kset_base` s plus `kset_per_clip[mode]` s per clip, each times a log-normal factor with
    mean 1 and log-sd `spread` (people differ task to task)."""

    pair: float = 6.0
    rating: float = 4.0
    kset_base: float = 4.0
    kset_per_clip: dict[str, float] = field(
        default_factory=lambda: {"best": 2.5, "best_worst": 3.0, "rank": 4.0}
    )
    spread: float = 0.3

    def mean_seconds(self, question: Pair | Level | KSet) -> float:
        if isinstance(question, KSet):
            return self.kset_base + self.kset_per_clip[question.mode] * len(question.items)
        return self.pair if isinstance(question, Pair) else self.rating

    def seconds(self, question: Pair | Level | KSet, rng: np.random.Generator) -> float:
        factor = math.exp(self.spread * rng.standard_normal() - self.spread**2 / 2)
        return self.mean_seconds(question) * factor


@dataclass(frozen=True)
class KSetScenario:
    """One K-set experiment.

    Attributes:
        n_items: clips, in prompts of `group_size`.
        sizes: task sizes offered: (2,) pairs only; (2, 3, 4) pairs and K-sets of 3 and 4.
        mode: what a K-set asks: "best", "best_worst" or "rank".
        rm_correlation: the reward model's correlation with the truth (engine prior).
        target_tau: Kendall tau within prompts (posterior mean against the truth) to reach.
        max_tasks_per_item: budget in tasks per clip; the run stops there if the target is
            not reached.
        check_every_per_item: tau is checked every this many tasks per 100 clips.
    """

    n_items: int = 100
    group_size: int = 4
    sizes: tuple[int, ...] = (2,)
    mode: str = "best"
    rm_correlation: float = 0.5
    target_tau: float = 0.9
    max_tasks_per_item: float = 8.0
    check_every_per_item: float = 0.05
    time: RaterTime = field(default_factory=RaterTime)
    raters: RaterSpec = field(default_factory=lambda: RaterSpec(concurrent=1))

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def run_kset(scenario: KSetScenario, seed: int) -> dict[str, object]:
    """One seeded run: tasks, comparisons (events) and rater hours when the target is first
    reached (interpolated between checks; NaN if never), the task mix, and the learned
    seconds per kind."""
    n = scenario.n_items
    spec = SyntheticSpec(
        n_items=n,
        n_groups=n // scenario.group_size,
        n_contexts=min(3, n // scenario.group_size),
        rm_correlation=scenario.rm_correlation,
        pair_scope="group",
        raters=scenario.raters,
    )
    world = SyntheticWorld(spec, derive_seed(seed, "world"))
    campaign = build_campaign(world.problem, reward_model=True)
    groups = torch.as_tensor(world.problem.groups)
    clock = TaskClock()
    rng = np.random.default_rng(derive_seed(seed, "answers", scenario.mode, *scenario.sizes))
    noise_var = campaign.noise_sd(None) ** 2
    check_every = max(1, round(scenario.check_every_per_item * n))
    budget = round(scenario.max_tasks_per_item * n)
    tasks, comparisons, seconds = [0], [0], [0.0]
    taus = [metrics.kendall_tau(np.zeros(n), world.quality, world.problem.groups)]
    kinds: dict[str, int] = {}
    now, events = 0.0, 0
    for task in range(1, budget + 1):
        choice = choose_task(
            campaign.posterior,
            groups,
            clock,
            noise_var=noise_var,
            sizes=scenario.sizes,
            mode=scenario.mode,
        )
        question = choice.question
        rater = int(rng.integers(scenario.raters.n_raters))
        if isinstance(question, KSet):
            answer, _ = world.answer_kset(question.items, question.mode, rater, rng)
            judgment = Judgment(rater, question, answer)
            events += len(question.comparisons(answer))
            kind = f"kset:{len(question.items)}"
        else:
            outcome, _ = world.answer_pair(question.first, question.second, rater, rng)
            judgment = Judgment.pair(rater, question.first, question.second, outcome)
            events += 1
            kind = question.kind
        took = scenario.time.seconds(question, rng)
        clock.observe(question, now, now + took)  # the service's shown-at and answered-at
        now += took
        campaign.observe([judgment])
        kinds[kind] = kinds.get(kind, 0) + 1
        if task % check_every == 0 or task == budget:
            mean = campaign.posterior.item_mean.cpu().numpy()
            taus.append(metrics.kendall_tau(mean, world.quality, world.problem.groups))
            tasks.append(task)
            comparisons.append(events)
            seconds.append(now)
            if taus[-1] >= scenario.target_tau:
                break
    target = scenario.target_tau
    return {
        "seed": seed,
        "tasks_to_target": labels_to_target(tasks, taus, ">=", target),
        "comparisons_to_target": labels_to_target(comparisons, taus, ">=", target),
        "hours_to_target": labels_to_target(seconds, taus, ">=", target) / 3600,
        "tasks": tasks[-1],
        "final_tau": taus[-1],
        "task_mix": kinds,
        "learned_seconds": {kind: clock.seconds(kind) for kind in sorted(clock.counts)},
    }


__all__ = ["KSetScenario", "RaterTime", "run_kset"]
