"""A rater is never handed a pair they judged, skipped or hold, including in the moment between
a label's commit and its application to the posterior, and is not told "nothing left" while a
pair they may answer remains (even one pending for someone else)."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest

from api.settings import Settings
from tests.api.conftest import ADMIN, LiveServer, clip_batch, serve

WAIT_S = 10.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """One task queued ahead: the engine often chooses for the rater (the path under test)."""
    return replace(settings, queue_min=1, queue_max=1)


async def _party(
    client: httpx.AsyncClient, n_clips: int, n_raters: int
) -> tuple[int, list[tuple[int, dict[str, str]]]]:
    """A campaign of `n_clips` in one prompt, no ties; (rater id, headers) per rater."""
    body = {"name": "c", "criteria": ["a", "b"], "ties": False}
    cid = (await client.post("/v1/campaigns", json=body, headers=ADMIN)).json()["id"]
    clips = {"clips": clip_batch(n_clips, groups=1)}
    added = await client.post(f"/v1/campaigns/{cid}/clips", json=clips, headers=ADMIN)
    assert added.status_code == 201, added.text
    raters = []
    for _ in range(n_raters):
        made = (await client.post(f"/v1/campaigns/{cid}/raters", json={}, headers=ADMIN)).json()
        raters.append((made["id"], {"Authorization": f"Bearer {made['token']}"}))
    return cid, raters


async def _assign(client: httpx.AsyncClient, cid: int, headers: dict[str, str]) -> dict[str, Any]:
    response = await client.post(f"/v1/campaigns/{cid}/assignments", headers=headers)
    assert response.status_code in (200, 201), response.text
    return response.json()


async def _judge(
    client: httpx.AsyncClient, assignment: dict[str, Any], headers: dict[str, str], choice: str
) -> None:
    url = f"/v1/assignments/{assignment['id']}/judgment"
    response = await client.post(url, json={"choice": choice}, headers=headers)
    assert response.status_code == 201, response.text


def _pair(assignment: dict[str, Any]) -> tuple[int, int]:
    left, right = assignment["left"]["id"], assignment["right"]["id"]
    return (min(left, right), max(left, right))


def _client(server: LiveServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, timeout=30)


class EngineGate:
    """Holds the engine thread inside its next pair selection for one rater (after the choice
    is made, before it returns) until `go` is set: the test acts in that window."""

    def __init__(self, campaign: Any, rater_id: int) -> None:
        self.entered, self.go = threading.Event(), threading.Event()
        real: Callable[..., Any] = campaign.next_pairs

        def gated(*args: Any, **kwargs: Any) -> Any:
            rater = args[0] if args else kwargs.get("rater")
            if rater != rater_id or self.entered.is_set():
                return real(*args, **kwargs)
            try:
                return real(*args, **kwargs)
            finally:
                self.entered.set()
                self.go.wait(WAIT_S)

        # an instance attribute: `Campaign.next_task` reaches it through `self.next_pairs` too
        campaign.next_pairs = gated


@pytest.mark.anyio
async def test_pair_answered_while_the_engine_chooses_is_not_handed_out_again(
    settings: Settings,
) -> None:
    """The label of the rater's open pair commits while the engine chooses their next task
    (so the engine has not applied it): the pair must not come back. (The engine runs on a
    thread here, where the test can hold it mid-choice.)"""
    with serve(replace(settings, engine_process=False)) as live_server:
        await _pair_answered_while_the_engine_chooses(live_server)


async def _pair_answered_while_the_engine_chooses(live_server: LiveServer) -> None:
    async with _client(live_server) as client:
        cid, [(rater_id, rater)] = await _party(client, n_clips=3, n_raters=1)
        for _ in range(2):
            await _judge(client, (await _assign(client, cid, rater))["assignment"], rater, "left")
        last = (await _assign(client, cid, rater))["assignment"]  # the third and last pair
        runtime = live_server.app.state.service.loaded_runtime(cid)
        gate = EngineGate(runtime.engine.local.campaign, rater_id)
        # nothing queued fits this rater (they judged it or hold it): the engine chooses
        asked = asyncio.ensure_future(_assign(client, cid, rater))
        assert await asyncio.to_thread(gate.entered.wait, WAIT_S)
        await _judge(client, last, rater, "right")  # committed, not applied
        gate.go.set()
        answer = await asyncio.wait_for(asked, WAIT_S)
        assert answer["assignment"] is None, (_pair(answer["assignment"]), _pair(last))
        assert "judged every pair" in answer["message"]


@pytest.mark.anyio
async def test_skipped_pair_is_not_asked_again_and_a_pending_pair_beats_nothing_left(
    live_server: LiveServer,
) -> None:
    """Three pairs: the rater judged one and skipped one, and another rater holds the third.
    The engine's free pick for the rater would be the skipped pair; they get the third (a
    duplicate of a pending pair, the engine's rule when nothing else is left), then nothing."""
    async with _client(live_server) as client:
        cid, [(_, rater), (_, other)] = await _party(client, n_clips=3, n_raters=2)
        judged = (await _assign(client, cid, rater))["assignment"]
        await _judge(client, judged, rater, "left")
        skipped = (await _assign(client, cid, rater))["assignment"]
        await _judge(client, skipped, rater, "skip")
        clips = sorted({*_pair(judged), *_pair(skipped)})
        [third] = set(itertools.combinations(clips, 2)) - {_pair(judged), _pair(skipped)}
        for _ in range(3):  # the other rater skips until they hold the third pair
            held = (await _assign(client, cid, other))["assignment"]
            if _pair(held) == third:
                break
            await _judge(client, held, other, "skip")
        assert _pair(held) == third
        given = (await _assign(client, cid, rater))["assignment"]
        assert given is not None
        assert _pair(given) == third, (_pair(given), _pair(skipped))
        after = await _assign(client, cid, rater)
        assert after["assignment"] is None
        assert "skipped or hold open the rest" in after["message"]


@pytest.mark.anyio
async def test_raters_answering_while_asking_ahead_get_every_pair_once(
    live_server: LiveServer,
) -> None:
    """Three raters each ask for their next task while their answer to the current one is
    on its way (as the rating page does): each gets every pair of the campaign exactly once,
    and "nothing left" only after that."""
    n_clips = 5
    async with _client(live_server) as client:
        cid, raters = await _party(client, n_clips=n_clips, n_raters=3)

        async def rate(headers: dict[str, str]) -> list[tuple[int, int]]:
            pairs = []
            current = (await _assign(client, cid, headers))["assignment"]
            while current is not None:
                pairs.append(_pair(current))
                asked, _ = await asyncio.gather(
                    _assign(client, cid, headers), _judge(client, current, headers, "left")
                )
                current = asked["assignment"]
            return pairs

        seen = await asyncio.gather(*(rate(headers) for _, headers in raters))
        for pairs in seen:
            assert len(pairs) == len(set(pairs)), sorted(pairs)
            assert len(pairs) == n_clips * (n_clips - 1) // 2
