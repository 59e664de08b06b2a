"""The pump's order of engine work (api/pump.py): while the queue of tasks chosen ahead is below
its target, a refill goes to the engine before the update of labels that are due, so requests
keep finding tasks queued instead of waiting for the update and then the refill."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace
from typing import Any

from litestar.testing import TestClient

from api.app import create_app
from api.settings import Settings
from tests.api.conftest import ADMIN, make_party

WAIT_S = 30.0
QUEUE_MIN = 4


def _gate_refills(runtime: Any) -> tuple[threading.Event, list[str]]:
    """Hold every refill (`choose` for no rater) until the returned event is set; the names of
    the engine calls sent after it was set, in order."""
    calls = runtime.engine_calls
    send = calls.submit
    opened = threading.Event()
    after: list[str] = []

    async def held(name: str, *args: Any) -> Any:
        while not opened.is_set():
            await asyncio.sleep(0.005)
        return await send(name, *args)

    def submit(name: str, *args: Any) -> Any:
        if opened.is_set():
            after.append(name)
            return send(name, *args)
        if name == "choose" and args[0] is None:
            return held(name, *args)
        return send(name, *args)

    calls.submit = submit
    return opened, after


def test_a_short_queue_is_refilled_before_due_labels_are_applied(settings: Settings) -> None:
    settings = replace(
        settings,
        queue_min=QUEUE_MIN,
        queue_max=QUEUE_MIN,
        refill_batch=1,
        apply_batch=1,  # a label is due as soon as it is committed
        apply_wait_s=0.0,
    )
    with TestClient(app=create_app(settings)) as client:
        party = make_party(client, n_clips=12, n_raters=QUEUE_MIN + 1, groups=1)
        board = client.get(f"/v1/campaigns/{party.id}/leaderboard", headers=ADMIN)
        assert board.status_code == 200, board.text
        runtime = client.app.state.service.loaded_runtime(party.id)
        opened, after = _gate_refills(runtime)
        # empty the queue (no refill gets through now): it is below its target
        shown = []
        for rater in range(QUEUE_MIN + 1):
            if not runtime.queue_depth:
                break
            response = client.post(
                f"/v1/campaigns/{party.id}/assignments", headers=party.rater(rater)
            )
            assert response.status_code == 201, response.text
            shown.append((rater, response.json()["assignment"]))
        assert shown and not runtime.queue_depth
        rater, assignment = shown[0]
        judged = client.post(
            f"/v1/assignments/{assignment['id']}/judgment",
            json={"choice": "left"},
            headers=party.rater(rater),
        )
        assert judged.status_code == 201, judged.text
        opened.set()
        deadline = time.monotonic() + WAIT_S
        while "observe" not in after:
            assert time.monotonic() < deadline, f"the label was not applied: {after}"
            time.sleep(0.01)
        assert "choose" in after and after.index("choose") < after.index("observe"), after
