"""The `sim` command line: run, sweep, replay, plot. Every command takes --seed and is
deterministic for it on the CPU (except a run against a live service, whose engine chooses).

    sim run --n-items 100 --rm-corr 0.7 -s information_gain -s random --reps 3 --out results/run
    sim run --n-items 40 --service http://127.0.0.1:8000 --key KEY --out results/service
    sim sweep --grid rm_correlation=0,0.7 --grid n_items=20,100 --jobs 4 --out results/sweep
    sim replay --reps 5 --out results/replay
    sim plot results/run.json --metric rmse
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections import defaultdict
from importlib import metadata
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from sim.plots import plot_curves
from sim.raters import RaterSpec
from sim.report import format_labels, labels_needed, read_results, short_target, write_results
from sim.runner import ReplaySpec, RunKey, Scenario, default_replay_path, run_many
from sim.strategies import STRATEGIES
from sim.worlds import SyntheticSpec

app = typer.Typer(help="Simulate rating parties: strategies, worlds, label efficiency.")
console = Console()
DISTRIBUTION = "ratingparty"


def package_version() -> str:
    """The installed ratingparty version ("unknown" when run from an uninstalled tree)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"sim (ratingparty) {package_version()}")
        raise typer.Exit()


Version = Annotated[
    bool,
    typer.Option(
        "--version", callback=_show_version, is_eager=True, help="print the version and exit"
    ),
]

DEFAULT_JOBS = max(1, (os.cpu_count() or 2) - 1)
DEFAULT_STRATEGIES = ("information_gain", "information_gain_no_rm", "random")
Strategies = Annotated[
    list[str] | None,
    typer.Option("--strategy", "-s", help=f"repeatable; known: {', '.join(STRATEGIES)}"),
]
Seed = Annotated[int, typer.Option(help="base seed: worlds, raters and strategies derive from it")]
Reps = Annotated[int, typer.Option(min=1, help="repetitions (worlds) per scenario")]
Jobs = Annotated[int, typer.Option(min=1, help="local worker processes")]
Address = Annotated[
    str | None,
    typer.Option(help="run on a cluster instead: ray://host:port, ray:auto, or a Dask tcp://"),
]
Out = Annotated[Path, typer.Option(help="output path prefix: writes PREFIX.json and PREFIX.png")]
Stop = Annotated[
    bool, typer.Option(help="stop a run once both targets are reached by both estimators")
]


def _check_strategies(strategies: list[str] | None) -> list[str]:
    chosen = list(strategies or DEFAULT_STRATEGIES)
    unknown = [s for s in chosen if s not in STRATEGIES]
    if unknown:
        raise typer.BadParameter(f"unknown strategy {unknown}; known: {sorted(STRATEGIES)}")
    return chosen


def _execute(
    scenarios: list[Scenario],
    strategies: list[str],
    *,
    reps: int,
    seed: int,
    jobs: int,
    address: str | None,
    out: Path,
    stop_at_targets: bool,
    metric: str = "kendall_tau",
) -> None:
    keys = [
        RunKey(scenario, strategy, rep, seed, stop_at_targets)
        for scenario in scenarios
        for rep in range(reps)
        for strategy in strategies
    ]
    columns = (*Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task("runs", total=len(keys))
        records = run_many(
            keys, jobs=jobs, address=address, progress=lambda *_: progress.advance(task)
        )
    _finish(scenarios, strategies, records, reps=reps, seed=seed, out=out, metric=metric)


def _finish(
    scenarios: list[Scenario],
    strategies: list[str],
    records: list[dict],
    *,
    reps: int,
    seed: int,
    out: Path,
    metric: str = "kendall_tau",
    extra: dict[str, object] | None = None,
) -> None:
    """Write PREFIX.json and PREFIX.png and print the table."""
    json_path, png_path = out.with_suffix(".json"), out.with_suffix(".png")
    document = write_results(
        json_path,
        seed=seed,
        scenarios=[{**s.to_dict(), "truth": s.build(seed).truth} for s in scenarios],
        strategies=strategies,
        records=records,
        extra={"reps": reps, **(extra or {})},
    )
    plot_curves(records, png_path, metric)
    _print_summary(document["summary"])
    console.print(f"wrote {json_path} and {png_path}")


def _execute_on_service(
    scenario: Scenario, *, url: str, key: str | None, reps: int, seed: int, out: Path
) -> None:
    """Each repetition as a campaign of its own on the service at `url` (sim.service)."""
    from client import Client, ServiceError  # only service runs need the HTTP client
    from sim.service import STRATEGY, run_against_service

    if not key:
        raise typer.BadParameter("--service needs the admin key: --key or RATINGPARTY_ADMIN_KEY")
    records: list[dict] = []
    campaigns: list[int] = []
    try:
        with Client(url, key=key) as service:
            for rep in range(reps):
                campaign_id, rows = run_against_service(scenario, rep, seed, service)
                console.print(f"rep {rep}: campaign {campaign_id} on {url}, {len(rows)} records")
                campaigns.append(campaign_id)
                records += rows
    except ServiceError as error:
        raise typer.BadParameter(f"--service {url}: {error}") from error
    extra = {"service": {"url": url, "campaigns": campaigns}}
    _finish([scenario], [STRATEGY], records, reps=reps, seed=seed, out=out, extra=extra)


def _print_summary(summary: list[dict]) -> None:
    """One table per scenario (its name as the title, since sweep names run long), rows per
    strategy, fit and target; the strategy column never wraps, so rows stay distinguishable
    in an 80-column terminal."""
    by_scenario: dict[str, list[dict]] = defaultdict(list)
    for row in summary:
        by_scenario[row["scenario"]].append(row)
    console.print(
        Text(
            "Labels to reach each target: mean [95 % CI] over repetitions ([n/a] below 3); "
            "ratio: over what random pairs need with the fixed fit; >=: some repetitions "
            "never reached the target."
        )
    )
    for scenario, rows in by_scenario.items():
        table = Table(title=scenario, box=box.SIMPLE_HEAD, pad_edge=False)
        widest = max(len(str(row["strategy"])) for row in rows)
        table.add_column("strategy", no_wrap=True, min_width=widest)
        table.add_column("fit")
        table.add_column("target", no_wrap=True)
        table.add_column("labels [95 % CI]", justify="right", overflow="fold")
        table.add_column("ratio", justify="right")
        for row in rows:
            ratio = row["ratio_to_random"]
            table.add_row(
                row["strategy"],
                row["estimator"],
                short_target(row["target"]),
                Text(format_labels(row)),  # plain text: "[n/a]" is not markup
                "-" if ratio != ratio else f"{ratio:.2f}",
            )
        console.print(table)


@app.callback()
def main(version: Version = False) -> None:
    """Simulate rating parties: strategies, worlds, label efficiency."""


def _synthetic_spec(**options: object) -> SyntheticSpec:
    rater_fields = {f.name for f in dataclasses.fields(RaterSpec)}
    raters = RaterSpec(**{k: v for k, v in options.items() if k in rater_fields})
    world = {k: v for k, v in options.items() if k not in rater_fields}
    try:
        return SyntheticSpec(raters=raters, **world)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error


@app.command()
def run(
    strategies: Strategies = None,
    n_items: Annotated[int, typer.Option(min=2)] = 100,
    groups: Annotated[int, typer.Option(min=1, help="prompt groups")] = 10,
    contexts: Annotated[int, typer.Option(min=1, help="prompt categories")] = 3,
    criteria: Annotated[int, typer.Option(min=0, help="reward-model criteria")] = 5,
    rm_corr: Annotated[float, typer.Option(help="corr(reward-model quality, truth)")] = 0.0,
    criteria_share: float = 0.9,
    quality_sd: Annotated[float, typer.Option(help="sd of true quality, JOD")] = 1.5,
    scope: Annotated[str, typer.Option(help="'any' or 'group'")] = "any",
    tie_margin: Annotated[float, typer.Option(help="tie margin in JOD; 0 = no ties")] = 0.0,
    random_clickers: Annotated[float, typer.Option(help="fraction of random raters")] = 0.0,
    lapse_rate: float = 0.0,
    raters: int = 20,
    concurrent: Annotated[int, typer.Option(help="raters working at once")] = 4,
    noise_spread: Annotated[float, typer.Option(help="sd of log rater noise")] = 0.2,
    side_bias: Annotated[
        float, typer.Option(help="raters' mean side offset, JOD (+ favours the left clip)")
    ] = 0.0,
    side_spread: Annotated[float, typer.Option(help="sd of the side offset across raters")] = 0.0,
    both_threshold: Annotated[
        float | None,
        typer.Option(help='raters answer a tie "both good"/"both bad" past this mean (JOD)'),
    ] = None,
    budget: Annotated[int, typer.Option(min=1, help="labels per run")] = 3000,
    every: Annotated[int, typer.Option(min=1, help="labels between checkpoints")] = 100,
    reps: Reps = 3,
    seed: Seed = 0,
    jobs: Jobs = 1,
    address: Address = None,
    stop_at_targets: Stop = False,
    out: Out = Path("results/run"),
    service: Annotated[
        str | None,
        typer.Option(
            help="run against a live service at this URL instead: its engine picks the pairs "
            "and the world's raters answer (no -s, --jobs, --address)"
        ),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(envvar="RATINGPARTY_ADMIN_KEY", help="the service's admin key"),
    ] = None,
    version: Version = False,
) -> None:
    """One synthetic world, several strategies, repetitions: a table, JSON and a PNG.

    With --service URL the same world and raters run against a live service instead (a
    campaign per repetition), through the Python client."""
    spec = _synthetic_spec(
        n_items=n_items,
        n_groups=groups,
        n_contexts=contexts,
        n_criteria=criteria,
        rm_correlation=rm_corr,
        criteria_share=criteria_share,
        quality_sd=quality_sd,
        pair_scope=scope,
        tie_margin=tie_margin,
        random_fraction=random_clickers,
        lapse_rate=lapse_rate,
        n_raters=raters,
        concurrent=concurrent,
        noise_spread=noise_spread,
        side_bias=side_bias,
        side_spread=side_spread,
        both_threshold=both_threshold,
    )
    scenario = Scenario(f"n{n_items}-rm{rm_corr:g}", spec, budget, every)
    if service is not None:
        if strategies:
            raise typer.BadParameter("with --service the service picks the pairs: drop -s")
        _execute_on_service(scenario, url=service, key=key, reps=reps, seed=seed, out=out)
        return
    _execute(
        [scenario],
        _check_strategies(strategies),
        reps=reps,
        seed=seed,
        jobs=jobs,
        address=address,
        out=out,
        stop_at_targets=stop_at_targets,
    )


def _parse_grid(grid: list[str]) -> dict[str, list[object]]:
    known = {f.name: f for f in dataclasses.fields(SyntheticSpec) if f.name != "raters"}
    known |= {f.name: f for f in dataclasses.fields(RaterSpec)}
    axes: dict[str, list[object]] = {}
    for item in grid:
        name, _, values = item.partition("=")
        if name not in known or not values:
            raise typer.BadParameter(f"--grid wants NAME=V1,V2 with NAME in {sorted(known)}")
        kind = {"int": int, "float": float, "str": str}.get(str(known[name].type), float)
        try:
            axes[name] = [kind(v) for v in values.split(",")]
        except ValueError as error:
            raise typer.BadParameter(f"--grid {item}: {error}") from error
    return axes


@app.command()
def sweep(
    grid: Annotated[
        list[str],
        typer.Option(help="NAME=V1,V2 (repeatable): any SyntheticSpec or RaterSpec field"),
    ],
    strategies: Strategies = None,
    budget: Annotated[int, typer.Option(min=1)] = 2000,
    every: Annotated[int, typer.Option(min=1)] = 100,
    reps: Reps = 3,
    seed: Seed = 0,
    jobs: Jobs = DEFAULT_JOBS,
    address: Address = None,
    stop_at_targets: Stop = False,
    out: Out = Path("results/sweep"),
    version: Version = False,
) -> None:
    """A grid of synthetic settings, run in parallel local processes (or on a cluster)."""
    axes = _parse_grid(grid)
    scenarios = []
    for values in itertools.product(*axes.values()):
        setting = dict(zip(axes, values, strict=True))
        name = ",".join(f"{k}={v}" for k, v in setting.items())
        scenarios.append(Scenario(name, _synthetic_spec(**setting), budget, every))
    _execute(
        scenarios,
        _check_strategies(strategies),
        reps=reps,
        seed=seed,
        jobs=jobs,
        address=address,
        out=out,
        stop_at_targets=stop_at_targets,
    )


@app.command()
def replay(
    csv: Annotated[
        Path | None, typer.Option(help="CSV of judgments; default: the shipped TMO videos")
    ] = None,
    rater: str = "observer",
    first: str = "condition_A",
    second: str = "condition_B",
    choice: str = "is_A_selected",
    group: Annotated[str, typer.Option(help="group column; '' for none")] = "scene",
    strategies: Strategies = None,
    every: Annotated[int, typer.Option(min=1)] = 25,
    reps: Reps = 5,
    seed: Seed = 0,
    jobs: Jobs = 1,
    address: Address = None,
    out: Out = Path("results/replay"),
    version: Version = False,
) -> None:
    """Recorded comparisons: strategies may only ask logged pairs and get logged answers.
    The truth is the MAP Thurstone fit of the whole log."""
    path = csv or default_replay_path()
    spec = ReplaySpec(str(path), path.stem, rater, first, second, choice, group or None)
    try:
        world = Scenario("probe", spec, 1, 1).build(seed)
    except (OSError, ValueError) as error:
        raise typer.BadParameter(str(error)) from error
    console.print(f"truth: {world.truth}")
    scenario = Scenario(f"replay-{path.stem}", spec, world.budget or 1, every)
    _execute(
        [scenario],
        _check_strategies(strategies),
        reps=reps,
        seed=seed,
        jobs=jobs,
        address=address,
        out=out,
        stop_at_targets=False,
    )


@app.command()
def demo(
    url: Annotated[str, typer.Argument(help="the service, e.g. http://127.0.0.1:8000")],
    media: Annotated[
        Path, typer.Option(help="the folder the service serves under /media/ (its pictures)")
    ],
    key: Annotated[
        str | None,
        typer.Option(envvar="RATINGPARTY_ADMIN_KEY", help="the service's admin key"),
    ] = None,
    clips: Annotated[int, typer.Option(min=2, help="clips in the demo")] = 60,
    seed: Annotated[int, typer.Option(help="the synthetic world's seed")] = 0,
    wait: Annotated[float, typer.Option(min=0, help="seconds to wait for the service")] = 60.0,
    version: Version = False,
) -> None:
    """Seed the demo campaign ("demo", synthetic clips shown as pictures) through the service's
    API, once: a campaign of that name is left as it is. Prints the campaign as JSON."""
    import json
    import time

    import httpx

    from client import Client, ServiceError
    from sim.demo import seed_demo

    if not key:
        raise typer.BadParameter("the demo needs the admin key: --key or RATINGPARTY_ADMIN_KEY")
    deadline = time.monotonic() + wait
    with Client(url, key=key) as service:
        while True:  # the service may still be starting
            try:
                service.health()
                break
            except (httpx.HTTPError, ServiceError) as error:
                if time.monotonic() > deadline:
                    raise typer.BadParameter(
                        f"{url} did not answer in {wait:g} s: {error}"
                    ) from error
                time.sleep(0.2)
        try:
            campaign = seed_demo(service, media, clips, seed)
        except ServiceError as error:
            raise typer.BadParameter(f"{url}: {error}") from error
    print(json.dumps({"id": campaign.id, "name": campaign.name, "n_clips": campaign.n_clips}))


@app.command()
def plot(
    results: Annotated[Path, typer.Argument(help="a JSON written by run, sweep or replay")],
    metric: Annotated[str, typer.Option(help="kendall_tau, spearman, rmse, top_k, ...")] = (
        "kendall_tau"
    ),
    out: Annotated[Path | None, typer.Option(help="PNG path; default beside the JSON")] = None,
    version: Version = False,
) -> None:
    """Re-draw the curves of a results file (any metric) and re-print its table."""
    try:
        document = read_results(results)
        path = plot_curves(
            document["records"], out or results.with_name(f"{results.stem}-{metric}.png"), metric
        )
    except (OSError, ValueError) as error:
        raise typer.BadParameter(str(error)) from error
    _print_summary(labels_needed(document["records"]))
    console.print(f"wrote {path}")


if __name__ == "__main__":
    app()
