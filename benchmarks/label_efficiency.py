"""Label efficiency: labels each strategy needs to reach Kendall tau 0.9 and RMSE 0.5 JOD.

A fixed suite: n = 20, 100, 500; reward model useless (corr 0) vs informative
(corr 0.7); ties on; 10 % random clickers; the recorded TMO-video replay. Every strategy's
labels are scored by the fixed MAP Thurstone fit and by the engine's posterior; the headline
row is `{scenario, n, strategy, target, labels_mean, labels_ci_low, labels_ci_high,
ratio_to_random}` (ratio to random pairs scored by the fixed fit), mean and 95 % interval over
repetitions. Runs stop once both targets are reached by both estimators (the budget caps the
rest; a run that never gets there counts at its budget and is marked censored).

    python -m benchmarks.label_efficiency --jobs 15                     # the whole suite
    python -m benchmarks.label_efficiency --only n500-rm0.7 --shard b   # part of it
    python -m benchmarks.label_efficiency --merge                       # shards -> results

Shards (raw records, gzip) go to benchmarks/results/raw/ (not committed); `--merge` combines
every shard there into benchmarks/results/label_efficiency.{json,md,png}.

A second suite, `--suite learning`, measures what learning the engine's assumptions
buys, on the same worlds as the core suite where the scenario names agree: the reward model
useless / weak / strong with and without empirical-Bayes prior refits (and the check that a
useless reward model costs nothing against the engine without one), and random clickers with
and without rater-reliability modelling. It writes label_efficiency_learning.{json,md,png}:

    python -m benchmarks.label_efficiency --suite learning --jobs 2
    python -m benchmarks.label_efficiency --suite learning --merge
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
from pathlib import Path

from sim.plots import plot_curves
from sim.raters import RaterSpec
from sim.report import (
    at_per_clip,
    coverage_gaps,
    format_labels,
    labels_needed,
    paired_ratio,
    provenance,
)
from sim.runner import (
    PER_CLIP,
    TARGETS,
    ReplaySpec,
    RunKey,
    Scenario,
    default_replay_path,
    run_many,
)
from sim.strategies import STRATEGIES
from sim.worlds import SyntheticSpec

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_NAMES = tuple(f"{m} {d} {v}" for m, (d, v) in TARGETS.items())
RAW = RESULTS / "raw"
REPS = 10
# (record key, heading, nominal value or None, True when higher is better)
AT_POINTS = (
    ("kendall_tau", "tau", None, True),
    ("rmse", "RMSE", None, False),
    ("coverage50", "cov 50 %", 0.5, None),
    ("coverage90", "cov 90 %", 0.9, None),
)
COVERAGE_TOLERANCE = 0.05
# the engine variants that learn its assumptions belong to the learning suite; the block form
# gives the same choices and needs a same-prompt scope; the factorised form is measured
# against the dense one by benchmarks.factorised_cost
VARIANTS = (
    "information_gain_eb",
    "information_gain_no_rm_eb",
    "information_gain_reliable",
    "information_gain_blocks",  # same-prompt scope only; the suite pairs across prompts
    "information_gain_factorised",  # the approximation past the dense limit: its own benchmark
    "information_gain_side",  # side offsets: benchmarks.position_bias
    "information_gain_gated",  # needs prompt features: benchmarks.gating
    "information_gain_global",  # one set of weights for every prompt: benchmarks.gating
)
SMALL = tuple(s for s in STRATEGIES if s not in VARIANTS)  # EUBO included: n <= 60 only
# predictive entropy over all 124,750 pairs and botorch's EUBO do not scale to n = 500
LARGE = tuple(s for s in SMALL if s not in ("uncertainty", "eubo"))
MEDIUM = tuple(s for s in SMALL if s != "eubo")


def _synthetic(n: int, rm: float, **raters: float) -> SyntheticSpec:
    return SyntheticSpec(
        n_items=n,
        n_groups=max(2, n // 10),
        n_contexts=2 if n <= 20 else 3,
        rm_correlation=rm,
        raters=RaterSpec(**raters),
    )


def suite() -> list[tuple[Scenario, tuple[str, ...]]]:
    """The fixed scenarios with the strategies each runs."""
    return [
        (Scenario("n20-rm0", _synthetic(20, 0.0), 1500, 25), SMALL),
        (Scenario("n20-rm0.7", _synthetic(20, 0.7), 1500, 25), SMALL),
        (Scenario("n100-rm0", _synthetic(100, 0.0), 10000, 100), MEDIUM),
        (Scenario("n100-rm0.7", _synthetic(100, 0.7), 10000, 100), MEDIUM),
        (Scenario("n100-rm0.7-ties", _synthetic(100, 0.7, tie_margin=0.5), 10000, 100), MEDIUM),
        (
            Scenario("n100-rm0.7-clickers", _synthetic(100, 0.7, random_fraction=0.1), 12000, 100),
            MEDIUM,
        ),
        (Scenario("n500-rm0.7", _synthetic(500, 0.7), 40000, 500), LARGE),
        (
            Scenario("replay-tmo", ReplaySpec(str(default_replay_path()), "tmo_video"), 1213, 25),
            SMALL,
        ),
    ]


def learning_suite() -> list[tuple[Scenario, tuple[str, ...]]]:
    """The learning suite's scenarios: reward model useless / weak / strong, with and without
    empirical Bayes; random clickers (10 % and 25 %) with and without reliability modelling."""
    rm = ("random", "information_gain", "information_gain_eb", "information_gain_no_rm")
    clickers = ("random", "information_gain", "information_gain_reliable")
    return [
        (
            Scenario("n100-rm0", _synthetic(100, 0.0), 10000, 100),
            (*rm, "information_gain_no_rm_eb"),
        ),
        (Scenario("n100-rm0.4", _synthetic(100, 0.4), 10000, 100), rm),
        (Scenario("n100-rm0.7", _synthetic(100, 0.7), 10000, 100), rm),
        (
            Scenario("n100-rm0.7-clickers", _synthetic(100, 0.7, random_fraction=0.1), 12000, 100),
            clickers,
        ),
        (
            Scenario(
                "n100-rm0.7-clickers25", _synthetic(100, 0.7, random_fraction=0.25), 16000, 100
            ),
            clickers,
        ),
    ]


SUITES = {"core": suite, "learning": learning_suite}
# (scenario, strategy, reference): the comparisons a suite is run for, paired by world
COMPARISONS = {
    "learning": [
        ("n100-rm0", "information_gain_eb", "information_gain"),
        ("n100-rm0", "information_gain_eb", "information_gain_no_rm"),
        ("n100-rm0", "information_gain_eb", "information_gain_no_rm_eb"),
        ("n100-rm0", "information_gain_no_rm_eb", "information_gain_no_rm"),
        ("n100-rm0.4", "information_gain_eb", "information_gain"),
        ("n100-rm0.4", "information_gain_eb", "information_gain_no_rm"),
        ("n100-rm0.7", "information_gain_eb", "information_gain"),
        ("n100-rm0.7", "information_gain_eb", "information_gain_no_rm"),
        ("n100-rm0.7-clickers", "information_gain_reliable", "information_gain"),
        ("n100-rm0.7-clickers25", "information_gain_reliable", "information_gain"),
    ],
}


def _stem(suite_name: str) -> str:
    return "label_efficiency" if suite_name == "core" else f"label_efficiency_{suite_name}"


def run_shard(
    names: list[str] | None,
    strategies: list[str] | None,
    *,
    seed: int,
    reps: int,
    jobs: int,
    address: str | None,
    shard: str,
    suite_name: str = "core",
    first_rep: int = 0,
) -> Path:
    """Run part of a suite and write its raw records to RAW/<stem>-<shard>.json.gz."""
    scenarios = SUITES[suite_name]()
    chosen = [
        (s, tuple(x for x in strats if not strategies or x in strategies))
        for s, strats in scenarios
        if not names or s.name in names
    ]
    unknown = set(names or ()) - {s.name for s, _ in scenarios}
    if unknown:
        raise SystemExit(
            f"unknown scenario(s) {sorted(unknown)}; known: {[s.name for s, _ in scenarios]}"
        )
    keys = [
        RunKey(scenario, strategy, rep, seed, stop_at_targets=True)
        for scenario, strats in chosen
        for rep in range(first_rep, first_rep + reps)
        for strategy in strats
    ]
    # the longest runs first, so the pool is not left waiting on one straggler; then by
    # repetition, so an interrupted shard still holds whole repetitions of every scenario
    keys.sort(
        key=lambda k: (
            -k.scenario.world.n_items if isinstance(k.scenario.world, SyntheticSpec) else 0,
            k.rep,
        )
    )
    started = provenance(seed)  # the code that runs, not what HEAD is when it ends
    RAW.mkdir(parents=True, exist_ok=True)
    partial = RAW / f"{_stem(suite_name)}-{shard}.partial.jsonl"
    partial.unlink(missing_ok=True)
    done = 0

    def tick(key: RunKey, rows: list[dict]) -> None:
        nonlocal done
        done += 1
        with partial.open("a") as handle:  # finished runs survive an interrupted shard
            handle.write(json.dumps(rows) + "\n")
        print(f"[{done}/{len(keys)}] {key.scenario.name} {key.strategy} rep {key.rep}", flush=True)

    records = run_many(keys, jobs=jobs, address=address, progress=tick)
    path = RAW / f"{_stem(suite_name)}-{shard}.json.gz"
    document = {
        "provenance": started,
        "reps": reps,
        "scenarios": [_describe(s, seed) for s, _ in chosen],
        "strategies": {s.name: list(strats) for s, strats in chosen},
        "records": records,
    }
    with gzip.open(path, "wt") as handle:
        json.dump(document, handle)
    partial.unlink()
    print(f"wrote {path} ({len(records)} records)")
    return path


def merge(notes: list[str] | None = None, suite_name: str = "core") -> None:
    """Combine every shard of a suite into <stem>.{json,md,png}, with the reader's `notes`."""
    stem = _stem(suite_name)
    scenarios_of = SUITES[suite_name]
    shards = sorted(RAW.glob(f"{stem}-*.json.gz"))
    documents = []
    for shard in shards:
        with gzip.open(shard, "rt") as handle:
            documents.append(json.load(handle))
    # an interrupted shard: its finished runs, described from the suite and labelled partial
    for partial in sorted(RAW.glob(f"{stem}-*.partial.jsonl")):
        runs = [json.loads(line) for line in partial.read_text().splitlines() if line.strip()]
        names = {rows[0]["scenario"] for rows in runs if rows}
        chosen = [(s, strats) for s, strats in scenarios_of() if s.name in names]
        # keep the repetitions every strategy finished, so ratios compare the same worlds
        finished = {(rows[0]["scenario"], rows[0]["strategy"], rows[0]["rep"]) for rows in runs}
        complete = {
            (s.name, rep)
            for s, strats in chosen
            for rep in {r for (n, _, r) in finished if n == s.name}
            if all((s.name, strategy, rep) in finished for strategy in strats)
        }
        records = [
            row for rows in runs for row in rows if (row["scenario"], row["rep"]) in complete
        ]
        seed = records[0]["seed"] if records else 0
        documents.append(
            {
                "provenance": {**provenance(seed), "partial": True},
                "reps": len(complete),
                "scenarios": [_describe(s, seed) for s, _ in chosen],
                "strategies": {s.name: list(strats) for s, strats in chosen},
                "records": records,
            }
        )
        shards.append(partial)
    if not documents:
        raise SystemExit(f"no shards in {RAW}: run the suite first")
    records = [r for d in documents for r in d["records"]]
    scenarios = {s["name"]: s for d in documents for s in d["scenarios"]}
    order = [s.name for s, _ in scenarios_of() if s.name in scenarios]
    sizes = {name: _size(scenarios[name]) for name in order}
    rows = []
    for row in labels_needed(records):
        rows.append({"scenario": row["scenario"], "n": sizes[row["scenario"]], **row})
    rows.sort(
        key=lambda r: (order.index(r["scenario"]), r["target"], r["estimator"], r["strategy"])
    )
    # records from before coverage50 and the per-clip checkpoints have neither table
    scored = all("coverage50" in r for r in records)
    flag = "" if suite_name == "core" else f" --suite {suite_name}"
    document = {
        "benchmark": stem,
        "command": f"python -m benchmarks.label_efficiency{flag} --jobs N && "
        f"python -m benchmarks.label_efficiency{flag} --merge",
        "shards": [
            {"file": p.name, **d["provenance"], "reps": d["reps"]}
            for p, d in zip(shards, documents, strict=True)
        ],
        "scenarios": [scenarios[name] for name in order],
        "strategies": {k: v for d in documents for k, v in d["strategies"].items()},
        "notes": list(notes or ()),
        "rows": rows,
        "comparisons": [
            paired_ratio(records, scenario, strategy, reference, target)
            for scenario, strategy, reference in COMPARISONS.get(suite_name, ())
            if scenario in scenarios
            for target in TARGET_NAMES
        ],
        "per_clip": at_per_clip(records, sizes, [m for m, *_ in AT_POINTS]) if scored else [],
        "coverage": coverage_gaps(records, sizes) if scored else [],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(document, indent=1) + "\n")
    (RESULTS / f"{stem}.md").write_text(_markdown(document))
    ordered = sorted(records, key=lambda r: order.index(r["scenario"]))
    plot_curves(ordered, RESULTS / f"{stem}.png")
    if document["coverage"]:
        # smaller than the headline plot: the committed results stay small
        plot_curves(ordered, RESULTS / f"{stem}_rmse.png", metric="rmse", dpi=60)
        plot_curves(
            ordered, RESULTS / f"{stem}_coverage.png", metric="coverage90", reference=0.9, dpi=60
        )
    print((RESULTS / f"{stem}.md").read_text())


def _describe(scenario: Scenario, seed: int) -> dict[str, object]:
    world = scenario.build(seed)
    return {**scenario.to_dict(), "n_items": world.problem.n_items, "truth": world.truth}


def _size(scenario: dict) -> int:
    return int(scenario["n_items"])


def summary_table(document: dict, target: str = "kendall_tau >= 0.9") -> str:
    """Strategies x scenarios: labels to reach `target` as a ratio to random pairs scored by
    the fixed fit, as `fixed-scored / engine-scored` (a `>=` where some worlds never got there)."""
    names = [s["name"] for s in document["scenarios"]]
    strategies = list(dict.fromkeys(r["strategy"] for r in document["rows"]))
    cells = {
        (r["scenario"], r["strategy"], r["estimator"]): r
        for r in document["rows"]
        if r["target"] == target
    }
    header = "| strategy | " + " | ".join(f"{n} (n={_n(document, n)})" for n in names) + " |"
    lines = [
        f"Labels to reach {target}, as a ratio to random pairs + fixed fit "
        "(scored by the fixed fit / by the engine posterior):",
        "",
        header,
        "|---|" + "---:|" * len(names),
    ]
    for strategy in strategies:
        row = []
        for name in names:
            pair = [cells.get((name, strategy, e)) for e in ("fixed", "engine")]
            if pair[0] is None:
                row.append("")
                continue
            text = [("≥" if c["censored"] else "") + f"{c['ratio_to_random']:.2f}" for c in pair]
            row.append(" / ".join(text))
        lines.append(f"| {strategy} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def coverage_table(document: dict, estimator: str = "engine") -> str:
    """Strategies x scenarios: the largest gap of 50 % / 90 % interval coverage from nominal
    at any checkpoint from 2 labels per clip on, scored by `estimator`; `*` outside
    +-COVERAGE_TOLERANCE."""
    names = [s["name"] for s in document["scenarios"]]
    gaps = {
        (g["scenario"], g["strategy"]): g
        for g in document["coverage"]
        if g["estimator"] == estimator
    }
    strategies = list(dict.fromkeys(g["strategy"] for g in document["coverage"]))
    lines = [
        f"Interval coverage of the {estimator} posterior: the largest gap from nominal of the "
        "50 % / 90 % intervals' coverage (mean over repetitions) at any checkpoint from 2 labels "
        f"per clip on, with the standard error of that mean over repetitions in brackets; `*` "
        f"outside +-{COVERAGE_TOLERANCE}:",
        "",
        "| strategy | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for strategy in strategies:
        cells = []
        for name in names:
            gap = gaps.get((name, strategy))
            if gap is None or "coverage50_gap" not in gap:
                cells.append("")
                continue
            text = []
            for metric in ("coverage50", "coverage90"):
                value = float(gap[f"{metric}_gap"])
                cell = f"{value:+.2f}" + ("*" if abs(value) > COVERAGE_TOLERANCE else "")
                if f"{metric}_se" in gap:
                    cell += f" ({float(gap[f'{metric}_se']):.2f})"
                text.append(cell)
            cells.append(" / ".join(text))
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def points_table(document: dict, scenario: str, estimator: str = "engine") -> list[str]:
    """One scenario's metrics at each `PER_CLIP` point, scored by `estimator`; `*` marks a
    value worse than random pairs' at the same point (lower tau, higher RMSE, coverage
    further from nominal)."""
    rows = {
        (r["strategy"], r["per_clip"]): r
        for r in document["per_clip"]
        if r["scenario"] == scenario and r["estimator"] == estimator
    }
    if not rows:
        return []
    strategies = list(dict.fromkeys(strategy for strategy, _ in rows))
    points = [p for p in PER_CLIP if any((s, p) in rows for s in strategies)]
    lines = [
        "",
        f"At {', '.join(f'{p:g}' for p in points)} labels per clip, scored by the {estimator} "
        "posterior (mean over repetitions; `*`: worse than random pairs at that point):",
        "",
        "| strategy | metric | " + " | ".join(f"{p:g}/clip" for p in points) + " |",
        "|---|---|" + "---:|" * len(points),
    ]
    for strategy in strategies:
        for metric, heading, nominal, higher in AT_POINTS:
            cells = []
            for point in points:
                row, base = rows.get((strategy, point)), rows.get(("random", point))
                if row is None:
                    cells.append("")
                    continue
                value = float(row[metric])
                worse = False
                if base is not None and strategy != "random":
                    theirs = float(base[metric])
                    if nominal is not None:
                        worse = abs(value - nominal) > abs(theirs - nominal) + 1e-12
                    else:
                        worse = value < theirs if higher else value > theirs
                cells.append(f"{value:.3f}" + ("*" if worse else ""))
            lines.append(f"| {strategy} | {heading} | " + " | ".join(cells) + " |")
    return lines


def _n(document: dict, name: str) -> int:
    return next(int(s["n_items"]) for s in document["scenarios"] if s["name"] == name)


def _markdown(document: dict) -> str:
    lines = [
        "# Label efficiency",
        "",
        "Labels needed to reach each target, mean [95 % CI] over repetitions, and the ratio to "
        "random pairs scored by the fixed MAP Thurstone fit (`x random`; below 1 saves labels). "
        "`>=` marks rows where some repetitions never reached the target within the budget "
        "(counted at the budget). Scored by: `fixed` = MAP Thurstone fit without the reward "
        "model, `engine` = the engine's posterior with the reward-model prior.",
        "",
        f"Command: `{document['command']}`",
        "",
    ]
    for shard in document["shards"]:
        lines.append(
            f"- shard {shard['file']}: seed {shard['seed']}, {shard['reps']} reps, "
            f"{shard['dtype']}, {shard['device']} ({shard['cpu']}), torch {shard['torch']}, "
            f"git {shard['git_sha'][:10]}{' (dirty)' if shard['git_dirty'] else ''}"
            f"{' - PARTIAL: only the runs that finished' if shard.get('partial') else ''}"
        )
    lines += [f"- note: {note}" for note in document.get("notes", ())]
    lines += ["", summary_table(document), ""]
    if document.get("coverage"):
        lines += [summary_table(document, "rmse <= 0.5"), "", coverage_table(document), ""]
    if document.get("comparisons"):
        lines += [
            "",
            "## Paired comparisons",
            "",
            "Labels one strategy needs over another's on the same world (scored by the fixed "
            "fit), mean [95 % CI] over repetitions; below 1 the first needs fewer.",
            "",
            "| scenario | strategy | vs | target | ratio | reps | censored |",
            "|---|---|---|---|---:|---:|---:|",
        ]
        for c in document["comparisons"]:
            lines.append(
                f"| {c['scenario']} | {c['strategy']} | {c['reference']} | {c['target']} | "
                f"{c['ratio_mean']:.3f} [{c['ratio_ci_low']:.3f}, {c['ratio_ci_high']:.3f}] | "
                f"{c['n_reps']} | {c['censored']} / {c['reference_censored']} |"
            )
        lines.append("")
    for scenario in document["scenarios"]:
        name = scenario["name"]
        world = scenario["world"]
        lines += ["", f"## {name}", ""]
        if world.get("kind") == "replay":
            lines.append(f"Recorded comparisons; the truth is {scenario['truth']}.")
        else:
            raters = world["raters"]
            lines.append(
                f"n = {world['n_items']}, reward-model corr {world['rm_correlation']}, "
                f"tie margin {raters['tie_margin']} JOD, "
                f"random clickers {raters['random_fraction']:.0%}, "
                f"{raters['concurrent']} raters at once, budget {scenario['budget']}."
            )
        lines += [
            "",
            "| strategy | scored by | tau >= 0.9 | x random | RMSE <= 0.5 | x random |",
            "|---|---|---:|---:|---:|---:|",
        ]
        rows = [r for r in document["rows"] if r["scenario"] == name]
        keys = list(dict.fromkeys((r["strategy"], r["estimator"]) for r in rows))
        for strategy, estimator in keys:
            cells = []
            for target in ("kendall_tau >= 0.9", "rmse <= 0.5"):
                row = next(
                    r
                    for r in rows
                    if (r["strategy"], r["estimator"], r["target"]) == (strategy, estimator, target)
                )
                ratio = row["ratio_to_random"]
                cells += [format_labels(row), "-" if math.isnan(ratio) else f"{ratio:.2f}"]
            lines.append(f"| {strategy} | {estimator} | " + " | ".join(cells) + " |")
        if document.get("per_clip"):
            lines += points_table(document, name)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reps", type=int, default=REPS)
    parser.add_argument("--first-rep", type=int, default=0, help="repetitions start here")
    parser.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--address", default=None, help="Ray or Dask scheduler address")
    parser.add_argument("--only", action="append", help="scenario name (repeatable)")
    parser.add_argument("--strategy", action="append", help="strategy name (repeatable)")
    parser.add_argument("--shard", default="all", help="name of this part's raw file")
    parser.add_argument("--merge", action="store_true", help="combine the shards into results/")
    parser.add_argument("--note", action="append", help="with --merge: a line for the reader")
    parser.add_argument("--suite", choices=sorted(SUITES), default="core")
    args = parser.parse_args()
    if args.merge:
        merge(args.note, args.suite)
        return
    run_shard(
        args.only,
        args.strategy,
        seed=args.seed,
        reps=args.reps,
        jobs=args.jobs,
        address=args.address,
        shard=args.shard,
        suite_name=args.suite,
        first_rep=args.first_rep,
    )


if __name__ == "__main__":
    main()
