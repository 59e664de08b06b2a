"""Concurrent raters against the real app served on a thread (`serve`): the requests really run
side by side. (Litestar's AsyncTestClient would hand them to the app one at a time, each
blocking the test's event loop until it is answered, so no two would ever overlap.)"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace

import httpx
import pytest

from api.settings import Settings
from tests.api.conftest import ADMIN, clip_batch, serve

N_CLIPS = 8  # 28 pairs in one group


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _party(client: httpx.AsyncClient, n_raters: int) -> tuple[int, list[dict[str, str]]]:
    cid = (
        await client.post(
            "/v1/campaigns", json={"name": "c", "criteria": ["a", "b"], "ties": True}, headers=ADMIN
        )
    ).json()["id"]
    clips = clip_batch(N_CLIPS, groups=1)
    assert (
        await client.post(f"/v1/campaigns/{cid}/clips", json={"clips": clips}, headers=ADMIN)
    ).status_code == 201
    headers = []
    for _ in range(n_raters):
        token = (await client.post(f"/v1/campaigns/{cid}/raters", json={}, headers=ADMIN)).json()[
            "token"
        ]
        headers.append({"Authorization": f"Bearer {token}"})
    return cid, headers


@pytest.mark.anyio
@pytest.mark.slow
@pytest.mark.parametrize("refill_batch", [1, 4])
async def test_concurrent_raters_get_no_duplicated_pending_pair(
    settings: Settings, refill_batch: int
) -> None:
    """24 open assignments out of 28 pairs: never the same pair twice. The queue holds at most
    queue_min plus one task per waiting request, so at most 26 pairs are ever pending and the
    engine never has to fall back on a pair pending elsewhere."""
    with serve(replace(settings, refill_batch=refill_batch)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            cid, raters = await _party(client, n_raters=8)
            pairs: list[tuple[int, int]] = []
            for _ in range(3):
                responses = await asyncio.gather(
                    *(client.post(f"/v1/campaigns/{cid}/assignments", headers=h) for h in raters)
                )
                for response in responses:
                    assert response.status_code == 201, response.text
                    shown = response.json()["assignment"]
                    pairs.append(tuple(sorted((shown["left"]["id"], shown["right"]["id"]))))
            repeated = [pair for pair, count in Counter(pairs).items() if count > 1]
            assert not repeated, repeated
            assert len(pairs) == 24


@pytest.mark.anyio
async def test_concurrent_answers_to_one_assignment_make_one_label(settings: Settings) -> None:
    with serve(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            cid, raters = await _party(client, n_raters=1)
            shown = (
                await client.post(f"/v1/campaigns/{cid}/assignments", headers=raters[0])
            ).json()
            url = f"/v1/assignments/{shown['assignment']['id']}/judgment"
            same = await asyncio.gather(
                *(client.post(url, json={"choice": "left"}, headers=raters[0]) for _ in range(5))
            )
            assert sorted(r.status_code for r in same) == [200, 200, 200, 200, 201]
            assert len({r.json()["judgment_id"] for r in same}) == 1
            other = (
                await client.post(f"/v1/campaigns/{cid}/assignments", headers=raters[0])
            ).json()
            url = f"/v1/assignments/{other['assignment']['id']}/judgment"
            mixed = await asyncio.gather(
                client.post(url, json={"choice": "left"}, headers=raters[0]),
                client.post(url, json={"choice": "right"}, headers=raters[0]),
            )
            assert sorted(r.status_code for r in mixed) == [201, 409]
            campaign = (await client.get(f"/v1/campaigns/{cid}", headers=ADMIN)).json()
            assert campaign["n_judgments"] == 2
