"""The schema's migrations: a fresh database gets the models' schema, a database made by the
service before migrations existed upgrades in place with its data, and a schema newer than
the code is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from litestar.testing import TestClient
from sqlalchemy import text
from sqlmodel import SQLModel

from api.app import create_app
from api.auth import hash_token
from api.campaigns import engine_config
from api.db import SchemaError, make_engine, migrate
from tests.api.conftest import ADMIN, ADMIN_KEY, make_settings

ROOT = Path(__file__).resolve().parents[2]
# api/db.py as it was before migrations: the tables `create_all` made then
BEFORE = Path(__file__).parent / "data" / "db_before_migrations.py"
TOKEN = "old-rater-token"


def _differences(db_url: str) -> list:
    engine = make_engine(db_url)
    try:
        with engine.connect() as connection:
            return compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    finally:
        engine.dispose()


def test_a_fresh_database_gets_the_schema_of_the_models(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate(engine)
    migrate(engine)  # at the newest revision already: nothing to do
    engine.dispose()
    assert _differences(db_url) == []


def _old_database(db_url: str) -> None:
    """Tables made by the code before migrations, with a campaign the old service could have
    written: clips, a rater, two answered pairs."""
    made = subprocess.run(
        [
            sys.executable,
            "-c",
            "import runpy, sys; ns = runpy.run_path(sys.argv[1]); "
            "ns['create_tables'](ns['make_engine'](sys.argv[2]))",
            str(BEFORE),
            db_url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert made.returncode == 0, made.stderr
    now = datetime.now(UTC)
    engine = make_engine(db_url)
    with engine.begin() as connection:
        config = engine_config(["a"], "group", True, None)
        connection.execute(
            text(
                "INSERT INTO campaign (id, name, criteria, pair_scope, ties, emoji_levels, "
                "lease_seconds, engine_config, created_at) VALUES (1, 'old', :criteria, "
                "'group', :yes, NULL, 60.0, :config, :now)"
            ),
            {"criteria": json.dumps(["a"]), "config": json.dumps(config), "now": now, "yes": True},
        )
        for position in range(4):
            connection.execute(
                text(
                    "INSERT INTO clip (id, campaign_id, position, external_id, uri, prompt_group, "
                    "context, scores, batch, after_seq, created_at) VALUES (:id, 1, :position, "
                    ":external, 'https://example.org/c.mp4', 'g', NULL, :scores, 1, 0, :now)"
                ),
                {
                    "id": position + 1,
                    "position": position,
                    "external": f"c{position}",
                    "scores": json.dumps([float(position)]),
                    "now": now,
                },
            )
        connection.execute(
            text(
                "INSERT INTO rater (id, campaign_id, name, token_hash, created_at) "
                "VALUES (1, 1, 'ann', :hash, :now)"
            ),
            {"hash": hash_token(TOKEN), "now": now},
        )
        for n, (first, second) in enumerate(((0, 1), (2, 3)), start=1):
            values = {"id": n, "first": first, "second": second, "now": now, "no": False}
            values["expires"] = now + timedelta(seconds=60)
            connection.execute(
                text(
                    "INSERT INTO assignment (id, campaign_id, rater_id, first, second, swapped, "
                    "gain, status, created_at, expires_at) VALUES (:id, 1, 1, :first, :second, "
                    ":no, 0.1, 'answered', :now, :expires)"
                ),
                values,
            )
            connection.execute(
                text(
                    "INSERT INTO judgment (id, campaign_id, assignment_id, rater_id, choice, "
                    "level, first, second, outcome, seq, batch, created_at) VALUES (:id, 1, :id, "
                    "1, 'left', NULL, :first, :second, 'win', :id, 1, :now)"
                ),
                values,
            )
        if engine.dialect.name == "postgresql":  # ids given by hand: move the sequences on
            for table in ("campaign", "clip", "rater", "assignment", "judgment"):
                connection.execute(
                    text(f"SELECT setval('{table}_id_seq', (SELECT max(id) FROM {table}))")
                )
    engine.dispose()


def test_a_database_from_before_migrations_upgrades_in_place(db_url: str) -> None:
    _old_database(db_url)
    assert _differences(db_url) != []  # the old schema lacks the new columns
    with TestClient(app=create_app(make_settings(db_url))) as client:
        campaign = client.get("/v1/campaigns/1", headers=ADMIN).json()
        assert (campaign["name"], campaign["state"], campaign["skip_limit"]) == ("old", "active", 3)
        assert (campaign["n_clips"], campaign["n_judgments"]) == (4, 2)
        assert campaign["prior_refit"] == "off"  # stored before refits: its stated prior
        board = client.get("/v1/campaigns/1/leaderboard", headers=ADMIN).json()
        assert [c["state"] for c in board["clips"]] == ["active"] * 4
        rater = {"Authorization": f"Bearer {TOKEN}"}
        raters = client.get("/v1/campaigns/1/raters", headers=ADMIN).json()["raters"]
        assert [(r["name"], r["labels"], r["active"]) for r in raters] == [("ann", 2, True)]
        shown = client.post("/v1/campaigns/1/assignments", headers=rater)
        assert shown.status_code == 201, shown.text  # the old rater token still works
        judged = client.post(
            f"/v1/assignments/{shown.json()['assignment']['id']}/judgment",
            json={"choice": "right"},
            headers=rater,
        )
        assert judged.status_code == 201
        assert client.post("/v1/campaigns/1/pause", headers=ADMIN).json()["state"] == "paused"
        export = client.get("/v1/campaigns/1/export", headers=ADMIN).text
        assert len(export.splitlines()) == 1 + 3
    assert _differences(db_url) == []


def test_a_schema_newer_than_the_code_is_refused(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate(engine)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    engine.dispose()
    # the lifespan's error reaches the test inside the task group's ExceptionGroup
    with (
        pytest.raises(BaseExceptionGroup) as caught,
        TestClient(app=create_app(make_settings(db_url))),
    ):
        pass
    assert caught.group_contains(SchemaError, match="9999_future")


def test_python_m_api_refuses_a_newer_schema_with_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    engine = make_engine(url)
    migrate(engine)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    engine.dispose()
    env = {**os.environ, "RATINGPARTY_ADMIN_KEY": ADMIN_KEY, "DATABASE_URL": url}
    done = subprocess.run(
        [sys.executable, "-m", "api", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("ratingparty: cannot start: ") and "9999_future" in lines[0]
    engine = make_engine(url)
    with engine.connect() as connection:  # left as it was
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == (
            "9999_future"
        )
    engine.dispose()
