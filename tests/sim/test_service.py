"""`sim run --service URL`: the simulated raters rate through the client on a real server
(uvicorn on a free port), answering the service's assignments from the world's truth."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from client import Client
from sim.cli import app
from sim.raters import RaterSpec
from sim.runner import derive_seed
from sim.worlds import SyntheticSpec, SyntheticWorld
from tests.api.conftest import ADMIN_KEY, make_settings, serve

SEED = 0
BUDGET = 30


# the served app warns about Litestar 3.0's handler style (we pin litestar < 3)
@pytest.mark.filterwarnings("ignore::litestar.exceptions.LitestarDeprecationWarning")
@pytest.mark.filterwarnings("ignore:Deprecated 'query' parameter")
def test_a_tiny_world_rates_on_a_live_service(tmp_path: Path) -> None:
    out = tmp_path / "service"
    # true qualities far apart next to the raters' noise: nearly every answer follows the truth
    world = ["--n-items", "8", "--groups", "2", "--contexts", "1", "--criteria", "2"]
    world += ["--rm-corr", "0.5", "--quality-sd", "20", "--scope", "group"]
    world += ["--raters", "3", "--concurrent", "2"]
    with serve(make_settings(f"sqlite:///{tmp_path / 'db.sqlite'}")) as server:
        args = ["run", *world, "--budget", str(BUDGET), "--every", "10", "--reps", "1"]
        args += ["--seed", str(SEED), "--service", server.url, "--out", str(out)]
        result = CliRunner().invoke(app, args, env={"RATINGPARTY_ADMIN_KEY": ADMIN_KEY})
        assert result.exit_code == 0, result.output + repr(result.exception)
        document = json.loads(out.with_suffix(".json").read_text())
        (campaign_id,) = document["service"]["campaigns"]
        assert f"campaign {campaign_id} on {server.url}" in result.output
        with Client(server.url, key=ADMIN_KEY) as service:
            campaign = service.campaign(campaign_id)
            rows = list(csv.DictReader(io.StringIO(service.export(campaign_id))))
    assert (campaign.n_clips, campaign.n_raters, campaign.n_judgments) == (8, 3, BUDGET)
    assert campaign.criteria == ["c0", "c1"] and campaign.pair_scope == "group"

    # the answers came from the world: rebuild it from the results file and check them
    scenario = document["scenarios"][0]
    spec_values = {k: v for k, v in scenario["world"].items() if k != "raters"}
    raters = scenario["world"]["raters"]
    raters["emoji_thresholds"] = tuple(raters["emoji_thresholds"])
    spec = SyntheticSpec(**spec_values, raters=RaterSpec(**raters))
    truth = SyntheticWorld(spec, derive_seed(SEED, scenario["name"], 0)).quality
    index = {f"clip-{i:05d}": i for i in range(8)}
    assert len(rows) == BUDGET and all(r["left_group"] == r["right_group"] for r in rows)
    agree = [truth[index[r["chosen"]]] > truth[index[r["rejected"]]] for r in rows]
    assert np.mean(agree) >= 0.8

    records = document["records"]
    assert {r["strategy"] for r in records} == {"service"}
    assert {r["estimator"] for r in records} == {"fixed", "engine", "service"}
    assert sorted({r["labels"] for r in records}) == [0, 10, 20, 30]
    last = next(r for r in records if r["estimator"] == "service" and r["labels"] == BUDGET)
    assert last["kendall_tau"] >= 0.5  # the service's leaderboard ranks the world's clips
    assert "service" in result.output and "tau >= 0.9" in result.output


def test_a_service_run_needs_the_admin_key_and_no_strategy(tmp_path: Path) -> None:
    base = ["run", "--service", "http://127.0.0.1:9", "--out", str(tmp_path / "x")]
    missing = CliRunner().invoke(app, base, env={"RATINGPARTY_ADMIN_KEY": ""})
    assert missing.exit_code == 2 and "admin key" in missing.output
    chosen = CliRunner().invoke(app, [*base, "--key", "k", "-s", "random"])
    assert chosen.exit_code == 2 and "drop -s" in chosen.output
    unreachable = CliRunner().invoke(app, [*base, "--key", "k"])
    assert unreachable.exit_code == 2 and not (tmp_path / "x.json").exists()
