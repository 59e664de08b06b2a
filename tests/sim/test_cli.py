"""The `sim` CLI end to end: tiny runs through typer, real files, real worker processes."""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sim.cli import app
from sim.parallel import map_runs
from sim.report import read_results
from sim.runner import RunKey, Scenario, run_once
from sim.worlds import SyntheticSpec

SEED = 0
TINY = ["--budget", "40", "--every", "20", "--reps", "2", "--seed", str(SEED)]


def _invoke(*args: str) -> None:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)


def _records_without_timing(path: Path) -> list[dict]:
    records = read_results(path)["records"]
    return [{k: v for k, v in r.items() if k != "strategy_seconds"} for r in records]


def test_tiny_sweep_runs_end_to_end_in_worker_processes(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    _invoke(
        "sweep",
        "--grid",
        "rm_correlation=0,0.7",
        "--grid",
        "n_items=10",
        "--grid",
        "n_groups=2",
        "--grid",
        "n_contexts=2",
        "-s",
        "random",
        "-s",
        "information_gain",
        "--jobs",
        "2",
        *TINY,
        "--out",
        str(out),
    )
    document = json.loads(out.with_suffix(".json").read_text())
    assert out.with_suffix(".png").stat().st_size > 10_000
    names = {s["name"] for s in document["scenarios"]}
    assert names == {
        "rm_correlation=0.0,n_items=10,n_groups=2,n_contexts=2",
        "rm_correlation=0.7,n_items=10,n_groups=2,n_contexts=2",
    }
    # 2 scenarios x 2 strategies x 2 reps x 6 checkpoints (0, 20, 40 and 2, 5, 10 labels:
    # 0.25, 0.5 and 1 per clip; 20 is 2 per clip) x 2 estimators
    assert len(document["records"]) == 2 * 2 * 2 * 6 * 2
    assert document["provenance"]["seed"] == SEED
    assert {"dtype", "device", "git_sha", "torch"} <= set(document["provenance"])
    summary = {
        (r["scenario"], r["strategy"], r["estimator"], r["target"]) for r in document["summary"]
    }
    assert len(summary) == 2 * 2 * 2 * 2


def test_same_seed_same_records_in_process_and_in_workers(tmp_path: Path) -> None:
    common = [
        "--n-items",
        "10",
        "--groups",
        "2",
        "--contexts",
        "2",
        "--rm-corr",
        "0.5",
        "-s",
        "arena",
    ]
    _invoke("run", *common, *TINY, "--jobs", "1", "--out", str(tmp_path / "a"))
    _invoke("run", *common, *TINY, "--jobs", "2", "--out", str(tmp_path / "b"))
    _invoke("run", *common, *TINY[:-1], "1", "--out", str(tmp_path / "c"))
    first = _records_without_timing(tmp_path / "a.json")
    assert first == _records_without_timing(tmp_path / "b.json")
    assert first != _records_without_timing(tmp_path / "c.json")


def test_the_table_fits_80_columns_and_tells_every_strategy_apart(tmp_path: Path) -> None:
    # three strategies that share their first 16 characters, two repetitions
    strategies = ("information_gain", "information_gain_no_rm", "information_gain_reliable")
    args = ["run", "--n-items", "10", "--groups", "2", "--contexts", "2", *TINY]
    for name in strategies:
        args += ["-s", name]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "run")], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output + repr(result.exception)
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    for name in strategies:
        # 2 fits x 2 targets, each a row that starts with the whole name
        rows = [line for line in lines if line.split()[:1] == [name]]
        assert len(rows) == 4, result.output
    # two repetitions: no interval at all rather than one that runs below zero labels
    table = [line for line in lines if line.split()[:1] and line.split()[0] in strategies]
    assert all("[n/a]" in line for line in table)
    assert not re.search(r"\[-\d", result.output)


@pytest.mark.parametrize("command", [[], ["run"], ["sweep"], ["replay"], ["plot"]])
def test_version_on_every_command(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"sim (ratingparty) {metadata.version('ratingparty')}"


def test_replay_and_plot_commands(tmp_path: Path) -> None:
    out = tmp_path / "replay"
    _invoke("replay", "-s", "round_robin", "--reps", "1", "--every", "400", "--out", str(out))
    document = read_results(out.with_suffix(".json"))
    records = document["records"]
    assert max(r["labels"] for r in records) == 1213  # the whole log, then it stops
    assert "MAP Thurstone fit" in document["scenarios"][0]["truth"]
    png = tmp_path / "rmse.png"
    _invoke("plot", str(out.with_suffix(".json")), "--metric", "rmse", "--out", str(png))
    assert png.stat().st_size > 10_000


@pytest.mark.parametrize(
    "args",
    [
        ("run", "-s", "no_such_strategy"),
        ("run", "--rm-corr", "0.99"),
        ("sweep", "--grid", "colour=red"),
        ("replay", "--csv", "/no/such/file.csv"),
    ],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(
    args: tuple[str, ...], tmp_path: Path
) -> None:
    out = tmp_path / "x"
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 2
    assert not out.with_suffix(".json").exists()


def test_plot_rejects_a_file_that_is_not_results(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.json"
    bogus.write_text("[1, 2]")
    result = CliRunner().invoke(app, ["plot", str(bogus)])
    assert result.exit_code == 2


def test_dask_cluster_backend_gives_the_same_records() -> None:
    distributed = pytest.importorskip("dask.distributed")
    scenario = Scenario("tiny", SyntheticSpec(n_items=8, n_groups=2, n_contexts=1), 20, 10)
    keys = [RunKey(scenario, "random", rep, SEED) for rep in range(2)]
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        remote = map_runs(run_once, keys, address=cluster.scheduler_address)
    local = [run_once(k) for k in keys]
    strip = [
        [{k: v for k, v in r.items() if k != "strategy_seconds"} for r in rows] for rows in local
    ]
    assert [
        [{k: v for k, v in r.items() if k != "strategy_seconds"} for r in rows] for rows in remote
    ] == strip
