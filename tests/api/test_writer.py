"""The database writer (group commit) and the store's prepared hot-path statements, on SQLite
and PostgreSQL: a failing op never sinks its group, coroutine callers of one group are woken
by one callback, and the prepared INSERT/UPDATE store what the Core statements would."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, func, select

from api import store
from api.db import create_tables, make_engine
from api.writer import Writer

HOLD_S = 5.0  # longest the first op keeps the writer busy while the test queues a group


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    create_tables(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def writer(engine: Engine) -> Iterator[Writer]:
    writer = Writer(engine)
    yield writer
    writer.close()


def _campaign_and_rater(writer: Writer) -> tuple[int, int]:
    values = {
        "name": "w",
        "criteria": ["a"],
        "pair_scope": "group",
        "ties": True,
        "emoji_levels": None,
        "lease_seconds": 60.0,
        "engine_config": {},
    }
    campaign = writer.submit(store.insert_campaign(values)).result()
    rater = writer.submit(store.insert_rater(campaign.id, "r", "hash")).result()
    return campaign.id, rater


def _assignment(campaign_id: int, rater_id: int, first: int = 0) -> dict[str, Any]:
    return {
        "campaign_id": campaign_id,
        "rater_id": rater_id,
        "first": first,
        "second": first + 1,
        "swapped": True,
        "gain": 0.25,
        "expires_at": datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
    }


def _judgment(campaign_id: int, rater_id: int, assignment_id: int, seq: int) -> dict[str, Any]:
    return {
        "campaign_id": campaign_id,
        "assignment_id": assignment_id,
        "rater_id": rater_id,
        "choice": "left",
        "level": None,
        "first": 0,
        "second": 1,
        "outcome": "win",
        "seq": seq,
    }


def _held(writer: Writer) -> threading.Event:
    """Keep the writer busy in an op of its own until the returned event is set, so the ops
    queued meanwhile form one group."""
    release = threading.Event()

    def hold(_: Connection) -> None:
        release.wait(HOLD_S)

    writer.submit(hold)
    return release


def _fail(_: Connection) -> None:
    raise ValueError("this op fails")


def test_a_failing_op_does_not_sink_its_group(writer: Writer, engine: Engine) -> None:
    campaign_id, rater_id = _campaign_and_rater(writer)
    release = _held(writer)
    before = writer.submit(store.insert_assignment(_assignment(campaign_id, rater_id, 0)))
    failing = writer.submit(_fail)
    # a constraint the database refuses (no such rater) fails inside the same transaction
    refused = writer.submit(store.insert_assignment(_assignment(campaign_id, 10_000, 2)))
    after = writer.submit(store.insert_assignment(_assignment(campaign_id, rater_id, 4)))
    release.set()
    with pytest.raises(ValueError, match="this op fails"):
        failing.result()
    with pytest.raises(Exception):  # noqa: B017 - the driver's own IntegrityError
        refused.result()
    ids = {before.result(), after.result()}
    with engine.connect() as connection:
        table = store.assignment_table
        stored = set(connection.execute(select(table.c.id)).scalars())
    assert stored == ids


@pytest.mark.anyio
async def test_run_resolves_a_group_with_one_callback_per_loop(
    writer: Writer, engine: Engine
) -> None:
    campaign_id, rater_id = _campaign_and_rater(writer)
    loop = asyncio.get_running_loop()
    calls: list[Callable[..., Any]] = []
    original = loop.call_soon_threadsafe

    def counting(callback: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        calls.append(callback)
        return original(callback, *args, **kwargs)

    release = _held(writer)
    loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
    try:
        tasks = [
            asyncio.ensure_future(
                writer.run(store.insert_assignment(_assignment(campaign_id, rater_id, 2 * k)))
            )
            for k in range(8)
        ]
        failing = asyncio.ensure_future(writer.run(_fail))
        await asyncio.sleep(0)  # every op is queued behind the held one
        release.set()
        ids = await asyncio.gather(*tasks)
        with pytest.raises(ValueError, match="this op fails"):
            await failing
    finally:
        del loop.call_soon_threadsafe
    assert len(set(ids)) == 8
    # the failing op made the group re-run op by op; its outcomes still came in one callback
    assert len(calls) == 1


@pytest.mark.anyio
async def test_a_run_cancelled_before_the_writer_took_it_never_runs(
    writer: Writer, engine: Engine
) -> None:
    campaign_id, rater_id = _campaign_and_rater(writer)
    release = _held(writer)
    task = asyncio.ensure_future(
        writer.run(store.insert_assignment(_assignment(campaign_id, rater_id)))
    )
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.sleep(0)
    release.set()
    # a later op commits after the cancelled one would have
    await writer.run(store.insert_progress(campaign_id, 0, None))
    with engine.connect() as connection:
        count = connection.execute(select(func.count()).select_from(store.assignment_table))
        assert count.scalar_one() == 0


def test_prepared_writes_store_what_core_would(writer: Writer, engine: Engine) -> None:
    campaign_id, rater_id = _campaign_and_rater(writer)
    values = _assignment(campaign_id, rater_id)
    assignment_id = writer.submit(store.insert_assignment(values)).result()
    judgment_id = writer.submit(
        store.insert_judgment(_judgment(campaign_id, rater_id, assignment_id, 0), "answered")
    ).result()
    logged = store.load_log(engine, campaign_id)
    (assignment,) = logged.assignments
    assert assignment.id == assignment_id
    assert (assignment.first, assignment.second, assignment.swapped) == (0, 1, True)
    assert assignment.status == "answered"
    stored_expiry = assignment.expires_at
    if stored_expiry.utcoffset() is None:  # SQLite keeps UTC wall time without an offset
        stored_expiry = stored_expiry.replace(tzinfo=UTC)
    assert abs(stored_expiry - values["expires_at"]) < timedelta(microseconds=1)
    (judgment,) = logged.judgments
    assert (judgment.id, judgment.assignment_id, judgment.seq) == (judgment_id, assignment_id, 0)
    assert (judgment.choice, judgment.outcome, judgment.level, judgment.batch) == (
        "left",
        "win",
        None,
        None,
    )
    with engine.connect() as connection:
        created = connection.execute(select(store.judgment_table.c.created_at)).scalar_one()
    assert created is not None


@pytest.mark.anyio
async def test_aclose_writes_what_the_loop_queued_in_its_last_iteration(engine: Engine) -> None:
    writer = Writer(engine)
    campaign_id, rater_id = _campaign_and_rater(writer)
    task = asyncio.ensure_future(
        writer.run(store.insert_assignment(_assignment(campaign_id, rater_id)))
    )
    await asyncio.sleep(0)  # the task queued its op; the loop hands it over only next iteration
    await writer.aclose()
    assert isinstance(await task, int)
    with pytest.raises(RuntimeError, match="stopped"):
        await writer.run(store.insert_progress(campaign_id, 0, None))
    with engine.connect() as connection:
        count = connection.execute(select(func.count()).select_from(store.assignment_table))
        assert count.scalar_one() == 1
