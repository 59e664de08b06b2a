"""A simulated party against a live ratingparty service, through the Python client.

The service's engine chooses every pair; the simulated world only plays the raters. The run
creates a campaign from the world's clips (scores, prompts, categories), registers the
world's raters, keeps `concurrent` of them holding an assignment each (so the service always
chooses while other pairs are pending, as in `sim.runner`), and answers the oldest from the
world's truth. At each checkpoint the labels so far are scored three ways: the two
estimators of `sim.runner.Scorer` fed the same labels ("fixed", "engine") and the service's
own leaderboard ("service"; its interval coverage, log loss and weight error are not
scored, NaN). The records have the shape `sim.runner` writes, so the report, table and plots
read them unchanged.

The service's choices depend on its own seed and on when its micro-batches close, so unlike
an in-process run the records are not reproducible label for label.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator

import numpy as np

from client import Assignment, Client, NewClip
from engine import Outcome
from sim import metrics
from sim.runner import Scenario, Scorer, derive_seed
from sim.worlds import SyntheticSpec, SyntheticWorld

STRATEGY = "service"  # the strategy name in records: the service's own selection
CHOICE = {Outcome.WIN: "left", Outcome.LOSS: "right", Outcome.TIE: "tie"}
UNSCORED = ("log_loss", "weight_rmse", "coverage50", "coverage90")


def _clips(world: SyntheticWorld, name: str) -> Iterator[NewClip]:
    """The world's clips as the service takes them (a NaN score is a missing one)."""
    problem = world.problem
    for i in range(problem.n_items):
        row = problem.scores[i] if problem.scores is not None else []
        scores = {
            criterion: None if math.isnan(value) else float(value)
            for criterion, value in zip(problem.criteria, row, strict=True)
        }
        yield NewClip(
            external_id=f"clip-{i:05d}",
            uri=f"https://example.org/sim/{name}/clip-{i:05d}.mp4",
            group=f"prompt-{int(problem.groups[i]):04d}",
            context=f"category-{int(problem.contexts[i])}",
            scores=scores,
        )


def run_against_service(
    scenario: Scenario, rep: int, seed: int, service: Client
) -> tuple[int, list[dict[str, object]]]:
    """Play one repetition of a synthetic scenario against the service.

    Args:
        scenario: a synthetic world recipe, its label budget and checkpoint spacing.
        rep: the repetition (draws the world with `seed`, as `sim.runner` does).
        seed: the base seed.
        service: a client holding the admin key.

    Returns:
        The campaign's id on the service, and one record per checkpoint and estimator.

    Raises:
        ValueError: the scenario replays recorded comparisons (a log can only answer the
            pairs it logged, and the service may ask any).
        client.ServiceError: the service refused a call or could not be reached.
    """
    if not isinstance(scenario.world, SyntheticSpec):
        raise ValueError("a service run needs a synthetic world: a log answers only its pairs")
    world_seed = derive_seed(seed, scenario.name, rep)
    world = SyntheticWorld(scenario.world, world_seed)
    problem, raters = world.problem, scenario.world.raters
    scorer = Scorer(world, derive_seed(world_seed, "held-out"))
    rng = np.random.default_rng(derive_seed(world_seed, STRATEGY, "answers"))
    groups = problem.groups if problem.pair_scope == "group" else None

    campaign = service.create_campaign(
        f"sim {scenario.name} rep {rep}",
        criteria=list(problem.criteria),
        pair_scope="group" if problem.pair_scope == "group" else "any",
        ties=problem.tie_margin > 0,
    )
    added = service.stream_clips(campaign.id, _clips(world, scenario.name))
    index_of = {ref.id: i for i, ref in enumerate(added.clips)}
    views = [
        service.for_rater(service.register_rater(campaign.id, f"sim-{r}").token)
        for r in range(raters.n_raters)
    ]

    outstanding: deque[tuple[int, Assignment]] = deque()
    busy: set[int] = set()
    done: set[int] = set()  # raters the service has nothing left for

    def hand_out() -> bool:
        idle = [r for r in range(raters.n_raters) if r not in busy and r not in done]
        while idle:
            rater = idle.pop(int(rng.integers(len(idle))))
            offer = views[rater].next_assignment(campaign.id)
            if offer.assignment is None:
                done.add(rater)
                continue
            outstanding.append((rater, offer.assignment))
            busy.add(rater)
            return True
        return False

    def answer(rater: int, task: Assignment) -> None:
        first = index_of[task.left.id]
        if task.right is None:  # one clip on the emoji scale
            level, _ = world.answer_rating(first, rater, rng)
            views[rater].judge(task.id, level=level)
            scorer.observe_rating(first, level)
            return
        second = index_of[task.right.id]
        outcome, who = world.answer_pair(first, second, rater, rng)
        views[rater].judge(task.id, CHOICE[outcome])
        scorer.observe(first, second, outcome, who)

    def served() -> dict[str, float]:
        mean = np.empty(problem.n_items)
        for clip in service.iter_leaderboard(campaign.id):  # every page
            mean[index_of[clip.id]] = clip.mean
        truth = world.quality
        return {
            "kendall_tau": metrics.kendall_tau(mean, truth, groups),
            "spearman": metrics.spearman(mean, truth, groups),
            "rmse": metrics.rmse(mean, truth, groups),
            "top_k": metrics.top_k_precision(mean, truth, groups),
            **dict.fromkeys(UNSCORED, math.nan),
        }

    records: list[dict[str, object]] = []
    labels = 0

    def checkpoint() -> None:
        for estimator, values in {**scorer.score(), STRATEGY: served()}.items():
            records.append(
                {
                    "scenario": scenario.name,
                    "strategy": STRATEGY,
                    "rep": rep,
                    "seed": seed,
                    "labels": labels,
                    "estimator": estimator,
                    **values,
                }
            )

    checkpoints = deque(scenario.checkpoints())
    for _ in range(min(raters.concurrent, scenario.budget)):
        if not hand_out():
            break
    while True:
        if checkpoints and labels == checkpoints[0]:
            checkpoints.popleft()
            checkpoint()
        if labels >= scenario.budget or not outstanding:
            break
        rater, task = outstanding.popleft()
        busy.discard(rater)
        answer(rater, task)
        labels += 1
        if labels + len(outstanding) < scenario.budget:
            hand_out()
    if labels not in {r["labels"] for r in records}:
        checkpoint()  # the service ran out of pairs before the budget: score what there is
    return campaign.id, records


__all__ = ["STRATEGY", "run_against_service"]
