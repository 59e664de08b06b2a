"""API test fixtures: the real app over a fresh database, SQLite file or PostgreSQL schema.

Every test that takes `db_url` runs twice: on an SQLite file in tmp_path and on a fresh schema
of the PostgreSQL server named by `RATINGPARTY_TEST_POSTGRES_URL` (default: the local
`postgres@127.0.0.1:5432/test`), which is used when `CI` is set or that variable is given and
skipped with the reason otherwise. The schema is dropped after the test.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from litestar import Litestar
from litestar.testing import TestClient

from api.app import create_app
from api.db import make_engine
from api.server import uvicorn_config
from api.settings import Settings

SEED = 0
ADMIN_KEY = "test-admin-key-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def postgres_url() -> str | None:
    """The PostgreSQL server to test against, or None when this run does not use one."""
    given = os.environ.get("RATINGPARTY_TEST_POSTGRES_URL")
    if given:
        return given
    return DEFAULT_POSTGRES_URL if os.environ.get("CI") else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Litestar 2.25 warns about the 2.x handler style that 3.0 drops; we pin litestar < 3."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(
                pytest.mark.filterwarnings("ignore::litestar.exceptions.LitestarDeprecationWarning")
            )
            item.add_marker(pytest.mark.filterwarnings("ignore:Deprecated 'query' parameter"))


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL with nothing in it yet."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ratingparty.db'}"
        return
    base = postgres_url()
    if base is None:
        pytest.skip(
            "PostgreSQL tests run when CI is set or RATINGPARTY_TEST_POSTGRES_URL names a server"
        )
    import psycopg
    from sqlalchemy.engine import make_url

    schema = f"t_{uuid.uuid4().hex[:12]}"
    plain = make_url(base).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(plain, autocommit=True) as connection:
            connection.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.OperationalError as error:
        pytest.fail(f"PostgreSQL at {base} is not reachable: {error}")
    separator = "&" if "?" in base else "?"
    yield f"{base}{separator}options=-csearch_path%3D{schema}"
    with psycopg.connect(plain, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


def make_settings(db_url: str, **overrides: Any) -> Settings:
    """Test settings: fixed admin key and seed, CPU engine."""
    values: dict[str, Any] = {
        "database_url": db_url,
        "admin_key": ADMIN_KEY,
        "seed": SEED,
        "engine_device": "cpu",
        # a test's first request waits for its campaign's load (the engine process's first
        # start imports torch, slow on a busy machine) instead of meeting a 503
        "load_wait_s": 60.0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(db_url: str) -> Settings:
    return make_settings(db_url)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The real app, started (lifespan) and stopped around the test."""
    with TestClient(app=create_app(settings)) as test_client:
        yield test_client


@dataclass
class LiveServer:
    """The app served by uvicorn on a thread of this process: requests from the test really run
    side by side (Litestar's AsyncTestClient hands them to the app one at a time), and the
    test can still reach the app's objects (`app.state.service`)."""

    url: str
    app: Litestar


@contextmanager
def serve(settings: Settings) -> Iterator[LiveServer]:
    """The real app over `settings`, listening on a free loopback port until the block ends."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    if settings.demo and settings.public_url is None:  # the demo seeds itself through it
        settings = replace(settings, public_url=f"http://127.0.0.1:{port}")
    app = create_app(settings)
    config = uvicorn_config(app, settings, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="live-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the live server did not start")
        time.sleep(0.01)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture
def live_server(settings: Settings) -> Iterator[LiveServer]:
    """`serve(settings)` for one test."""
    with serve(settings) as server:
        yield server


def clip_batch(n: int, *, start: int = 0, groups: int = 2, criteria=("a", "b")) -> list[dict]:
    """`n` clips with external ids e{start}..; one score of each missing now and then."""
    clips = []
    for i in range(start, start + n):
        scores = {name: float((i * (k + 3)) % 7) - 3.0 for k, name in enumerate(criteria)}
        if criteria and i % 4 == 3:
            scores[criteria[-1]] = None
        clips.append(
            {
                "external_id": f"e{i}",
                "uri": f"https://example.org/clips/{i}.mp4",
                "group": f"g{i % groups}",
                "context": "animals" if i % 3 else "sports",
                "scores": scores,
            }
        )
    return clips


@dataclass
class Party:
    """A campaign ready to rate: its id, clip ids and rater tokens."""

    id: int
    clip_ids: list[int]
    raters: list[dict[str, Any]]

    def rater(self, index: int) -> dict[str, str]:
        """Headers of rater `index`."""
        return {"Authorization": f"Bearer {self.raters[index]['token']}"}


def make_party(
    client: TestClient,
    *,
    n_clips: int = 6,
    n_raters: int = 2,
    groups: int = 2,
    **campaign: Any,
) -> Party:
    """Create a campaign (criteria a, b and no background prior refit unless given), add
    clips, register raters. A refit starts a worker process and a snapshot at 2n, 4n, ...
    labels: tests of it ask for it (tests/api/test_refits.py)."""
    body = {"name": "party", "criteria": ["a", "b"], "prior_refit": "off", **campaign}
    created = client.post("/v1/campaigns", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    cid = created.json()["id"]
    criteria = tuple(body["criteria"])
    added = client.post(
        f"/v1/campaigns/{cid}/clips",
        json={"clips": clip_batch(n_clips, groups=groups, criteria=criteria)},
        headers=ADMIN,
    )
    assert added.status_code == 201, added.text
    raters = []
    for r in range(n_raters):
        response = client.post(f"/v1/campaigns/{cid}/raters", json={"name": f"r{r}"}, headers=ADMIN)
        assert response.status_code == 201, response.text
        raters.append(response.json())
    return Party(cid, [c["id"] for c in added.json()["clips"]], raters)


def answer(client: TestClient, party: Party, rater: int, choice: str = "left") -> dict[str, Any]:
    """Ask for an assignment and answer it (`choice` for a pair, level 2 for a rating)."""
    response = client.post(f"/v1/campaigns/{party.id}/assignments", headers=party.rater(rater))
    assert response.status_code == 201, response.text
    assignment = response.json()["assignment"]
    body = {"choice": choice} if assignment["kind"] == "pair" else {"level": 2}
    judged = client.post(
        f"/v1/assignments/{assignment['id']}/judgment", json=body, headers=party.rater(rater)
    )
    assert judged.status_code == 201, judged.text
    return assignment


def inspect(client: TestClient, runtime: Any, name: str) -> Any:
    """An engine diagnostic of a runtime (`pending` or `log`), asked on the app's event loop
    like the service's own engine calls, wherever the engine runs."""
    return client.blocking_portal.call(runtime.inspect, name)


def pending_tasks(client: TestClient, runtime: Any) -> tuple[Any, ...]:
    """The engine's pending tasks of a runtime."""
    return inspect(client, runtime, "pending")


def assert_close_structures(a: object, b: object, atol: float = 1e-9, path: str = "") -> None:
    """Equal JSON-like structures (dicts, lists, scalars), floats within `atol`; `path` names
    the first place that differs."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for key in a:
            assert_close_structures(a[key], b[key], atol, f"{path}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close_structures(x, y, atol, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, abs=atol), path
    else:
        assert a == b, path


def run_sql(settings: Settings, statement: str, **params: object) -> list[tuple]:
    """One statement on the settings' database, committed; its rows, if it returns any."""
    from sqlalchemy import text

    engine = make_engine(settings.database_url)
    try:
        with engine.begin() as connection:
            result = connection.execute(text(statement), params)
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        engine.dispose()
