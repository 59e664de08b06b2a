"""What the single-strategy benchmarks share: raters answering a strategy's pairs a few at a
time, with checkpoints, the "mean [min, max]" cells of their tables, the command line that
reproduces a run, and writing the results.

`answer_concurrently` keeps `concurrent` pairs out at once (each held by a rater drawn from
those without one), answers the oldest (the world's raters, with the side the page drew),
hands the strategy the answer and asks it for the next pair, and calls `checkpoint` every
`every` labels and at the budget: the loop `sim.runner` runs for its scenarios, without its
scorers, for benchmarks that score a strategy by its own posterior.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engine import Outcome
from sim.worlds import World

# (first, second, outcome, rater, clip shown left or None): what a benchmark's own scorer hears
Answer = Callable[[int, int, Outcome, int, int | None], None]


def answer_concurrently(
    strategy: Any,
    world: World,
    rng: np.random.Generator,
    *,
    n_raters: int,
    concurrent: int,
    budget: int,
    every: int,
    checkpoint: Callable[[int, float], None],
    also: Answer | None = None,
) -> float:
    """Run `strategy` on `world` for `budget` labels; `checkpoint(labels, seconds)` at 0,
    every `every` labels and at the budget (seconds: the strategy's own time so far, choosing
    and updating); `also` hears every answer too. Returns the strategy's seconds."""
    outstanding: deque[tuple[int, int, int]] = deque()
    seconds, labels = 0.0, 0
    raters = list(range(n_raters))

    def hand_out() -> None:
        nonlocal seconds
        busy = {r for r, _, _ in outstanding}
        idle = [r for r in raters if r not in busy]
        rater = int(idle[rng.integers(len(idle))])
        started = time.perf_counter()
        first, second = strategy.propose(rater, None)
        seconds += time.perf_counter() - started
        outstanding.append((rater, first, second))

    for _ in range(concurrent):
        hand_out()
    while True:
        if labels % every == 0 or labels == budget:
            checkpoint(labels, seconds)
        if labels == budget:
            return seconds
        rater, first, second = outstanding.popleft()
        left = world.shown_left(first, second, rng)
        outcome, who = world.answer_pair(first, second, rater, rng, left)
        started = time.perf_counter()
        strategy.observe(first, second, outcome, who, left)
        seconds += time.perf_counter() - started
        if also is not None:
            also(first, second, outcome, who, left)
        labels += 1
        hand_out()


def spread(values: list[float], digits: int = 0) -> str:
    """`mean [min, max]` of the finite values, and how many were not reached (NaN)."""
    finite = [v for v in values if np.isfinite(v)]
    if not finite:
        return "not reached"
    text = f"{np.mean(finite):.{digits}f} [{min(finite):.{digits}f}, {max(finite):.{digits}f}]"
    missed = len(values) - len(finite)
    return text + (f" ({missed} not reached)" if missed else "")


def command_line(module: str, parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """`python -m module` with every option given a value other than its default (the output
    folder left out): the command a results file names."""
    given = (
        f" --{key.replace('_', '-')} {value}"
        for key, value in vars(args).items()
        if key != "out" and value != parser.get_default(key)
    )
    return f"python -m {module}" + "".join(given)


def write_results(out: Path, name: str, payload: dict[str, Any], table: str) -> None:
    """`out/name.json` (the payload) and `out/name.md` (the table), and the table printed."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(payload, indent=1))
    (out / f"{name}.md").write_text(table)
    print(table)


__all__ = ["Answer", "answer_concurrently", "command_line", "spread", "write_results"]
