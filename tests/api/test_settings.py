"""Settings from the environment, the generated admin key, and the demo campaign."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from api.settings import Settings, load_or_create_admin_key
from tests.api.conftest import ADMIN, make_settings, serve


def test_admin_key_is_generated_once_and_kept(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'data' / 'r.db'}"
    key, created = load_or_create_admin_key(url)
    assert created and len(key) >= 32
    path = tmp_path / "data" / "admin_key"
    assert path.read_text().strip() == key and (path.stat().st_mode & 0o777) == 0o600
    assert load_or_create_admin_key(url) == (key, False)
    settings = Settings.from_env({"DATABASE_URL": url})
    assert settings.admin_key == key
    given = Settings.from_env(
        {"DATABASE_URL": url, "RATINGPARTY_ADMIN_KEY": "k" * 20, "RATINGPARTY_QUEUE_MAX": "4"}
    )
    assert (given.admin_key, given.queue_max) == ("k" * 20, 4)


def test_short_admin_keys_and_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        Settings(admin_key="short")
    with pytest.raises(ValueError, match="queue_min"):
        Settings(admin_key="k" * 20, queue_min=5, queue_max=2)


def test_demo_campaign_is_seeded_once_through_the_api(tmp_path: Path) -> None:
    """`sim demo` seeds the demo through the running server's API, once: a restart finds it."""
    database = tmp_path / "demo.db"
    seeded = []
    for _ in range(2):
        with serve(make_settings(f"sqlite:///{database}", demo=True)) as server:
            deadline = time.monotonic() + 120
            while not server.app.state.demo.done():  # on the server's loop, in its thread
                assert time.monotonic() < deadline, "the demo was not seeded"
                time.sleep(0.05)
            seeded.append(server.app.state.demo.result())
            campaigns = httpx.get(f"{server.url}/v1/campaigns", headers=ADMIN).json()
            assert [
                (c["name"], c["n_clips"], c["emoji_levels"]) for c in campaigns["campaigns"]
            ] == [("demo", 60, 5)]
            picture = httpx.get(f"{server.url}/media/clip-00000.png")
            assert picture.status_code == 200 and picture.content[:4] == b"\x89PNG"
    assert seeded[0] == seeded[1] and seeded[0].n_clips == 60
    assert len(list((tmp_path / "media").glob("*.png"))) == 60


def test_the_demo_needs_the_servers_own_url(tmp_path: Path) -> None:
    settings = make_settings(f"sqlite:///{tmp_path / 'demo.db'}", demo=True)
    with pytest.raises(ValueError, match="RATINGPARTY_PUBLIC_URL"):
        create_app(settings)


def test_engine_process_setting_from_the_environment() -> None:
    base = {"RATINGPARTY_ADMIN_KEY": "k" * 20, "DATABASE_URL": "sqlite:///x.db"}
    assert Settings.from_env(base).engine_process is True
    for raw, expected in (("0", False), ("false", False), ("1", True), ("yes", True)):
        settings = Settings.from_env({**base, "RATINGPARTY_ENGINE_PROCESS": raw})
        assert settings.engine_process is expected, raw
    with pytest.raises(ValueError, match="RATINGPARTY_ENGINE_PROCESS must be 0 or 1"):
        Settings.from_env({**base, "RATINGPARTY_ENGINE_PROCESS": "maybe"})
