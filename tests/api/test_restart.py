"""A fresh app on the same database rebuilds every campaign from its judgments table."""

from __future__ import annotations

from dataclasses import replace

import pytest
from litestar.testing import TestClient

from api.app import create_app
from api.settings import Settings
from tests.api.conftest import (
    ADMIN,
    assert_close_structures,
    clip_batch,
    inspect,
    make_party,
    pending_tasks,
)


def _reads(client: TestClient, cid: int) -> tuple[dict, dict, dict]:
    board = client.get(f"/v1/campaigns/{cid}/leaderboard", headers=ADMIN).json()
    weights = client.get(f"/v1/campaigns/{cid}/weights", headers=ADMIN).json()
    raters = client.get(f"/v1/campaigns/{cid}/raters", headers=ADMIN).json()
    return board, weights, raters


@pytest.mark.slow
@pytest.mark.parametrize("engine_process", [True, False], ids=["process", "thread"])
def test_restart_gives_the_same_state(settings: Settings, engine_process: bool) -> None:
    settings = replace(settings, engine_process=engine_process)
    with TestClient(app=create_app(settings)) as client:
        party = make_party(client, n_clips=6, n_raters=3, groups=2, emoji_levels=5)
        answered = []
        for step in range(18):
            rater = step % 3
            if step == 9:  # clips mid-campaign: the replay keeps them between the same labels
                more = {"clips": clip_batch(4, start=6, groups=2)}
                assert (
                    client.post(
                        f"/v1/campaigns/{party.id}/clips", json=more, headers=ADMIN
                    ).status_code
                    == 201
                )
            shown = client.post(
                f"/v1/campaigns/{party.id}/assignments", headers=party.rater(rater)
            ).json()["assignment"]
            if shown["kind"] == "rating":
                body = {"level": step % 5}
            else:
                body = {"choice": ("left", "right", "tie", "skip")[step % 4]}
            response = client.post(
                f"/v1/assignments/{shown['id']}/judgment", json=body, headers=party.rater(rater)
            )
            assert response.status_code == 201
            answered.append((shown["id"], body, rater))
        still_open = client.post(
            f"/v1/campaigns/{party.id}/assignments", headers=party.rater(0)
        ).json()["assignment"]
        before = _reads(client, party.id)
        old_runtime = client.app.state.service.loaded_runtime(party.id)
        old_log = inspect(client, old_runtime, "log")

    with TestClient(app=create_app(settings)) as client:
        after = _reads(client, party.id)
        assert_close_structures(before, after)
        runtime = client.app.state.service.loaded_runtime(party.id)
        assert (
            inspect(client, runtime, "log") == old_log
        )  # same labels, same order, same noise applied
        assert any(
            (t.first, t.second)
            == (
                runtime.assignments[still_open["id"]].first,
                runtime.assignments[still_open["id"]].second,
            )
            for t in pending_tasks(client, runtime)
        )
        # answers given before the restart are still idempotent
        aid, body, rater = answered[0]
        repeat = client.post(
            f"/v1/assignments/{aid}/judgment", json=body, headers=party.rater(rater)
        )
        assert repeat.status_code == 200 and repeat.json()["duplicate"] is True
        changed = {"choice": "skip"} if body != {"choice": "skip"} else {"choice": "left"}
        assert (
            client.post(
                f"/v1/assignments/{aid}/judgment", json=changed, headers=party.rater(rater)
            ).status_code
            == 409
        )
        # the assignment left open before the restart is answerable after it
        body = {"level": 1} if still_open["kind"] == "rating" else {"choice": "left"}
        late = client.post(
            f"/v1/assignments/{still_open['id']}/judgment", json=body, headers=party.rater(0)
        )
        assert late.status_code == 201
        client.get(f"/v1/campaigns/{party.id}/leaderboard", headers=ADMIN)  # after the apply
        assert all(
            t.id != runtime.assignments[still_open["id"]].task_id
            for t in pending_tasks(client, runtime)
        )
