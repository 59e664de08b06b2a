"""Browser tests: the real service in a uvicorn subprocess, Debian's chromium driven by Playwright.

The server runs on a free port with a fresh SQLite file and a media folder of pictures drawn by
`sim.demo_media`; a test talks to it over HTTP (`Service`) and opens its pages in a fresh
browser context (its own localStorage and sessionStorage). Screenshots go to ARTIFACTS.
Without a chromium the tests skip, except under CI, where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from sim.demo_media import write_demo_media

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
ADMIN_KEY = "browser-test-admin-key-0123456789"
STARTUP_TIMEOUT_S = 60.0
N_TEST_CLIPS = 8


def chromium_path() -> str | None:
    """Debian's chromium (the set-up installs it), or the CHROMIUM environment variable."""
    return (
        os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Service:
    """A running service: its URL, its SQLite file and an admin HTTP client."""

    url: str
    database: Path
    media: Path
    client: httpx.Client

    def create_campaign(self, uris: list[str] | None = None, **fields: object) -> dict:
        """A campaign with N_TEST_CLIPS clips in two prompts: the pictures `/media/clip-00k.png`
        unless `uris` (cycled) says otherwise."""
        body = {"name": "browser test", "criteria": ["alignment", "fineness"], **fields}
        campaign = self.post("/v1/campaigns", body)
        clips = [
            {
                "external_id": f"clip-{index}",
                "uri": uris[index % len(uris)] if uris else f"/media/clip-{index:03d}.png",
                "group": f"prompt {index % 2}",
                "context": "shapes",
                "scores": {"alignment": float(index), "fineness": float(-index)},
            }
            for index in range(N_TEST_CLIPS)
        ]
        self.post(f"/v1/campaigns/{campaign['id']}/clips", {"clips": clips})
        return campaign

    def add_rater(self, campaign_id: int, name: str = "rater") -> str:
        """Register a rater; returns their token."""
        return self.post(f"/v1/campaigns/{campaign_id}/raters", {"name": name})["token"]

    def post(self, path: str, body: object) -> dict:
        response = self.client.post(path, json=body)
        response.raise_for_status()
        return response.json()

    def judgments(self, campaign_id: int) -> list[tuple[int, str | None, int | None]]:
        """(assignment_id, choice, level) of every stored judgment, straight from the database."""
        with sqlite3.connect(self.database) as connection:
            rows = connection.execute(
                "SELECT assignment_id, choice, level FROM judgment WHERE campaign_id = ? "
                "ORDER BY id",
                (campaign_id,),
            ).fetchall()
        return [(int(a), c, lvl) for a, c, lvl in rows]


@pytest.fixture(scope="session")
def chromium() -> str:
    path = chromium_path()
    if path is None:
        message = "no chromium: `make install` installs Debian's package"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The real app (`create_app` from the environment) served by uvicorn on a free port."""
    folder = tmp_path_factory.mktemp("service")
    quality = np.linspace(-2.0, 2.0, N_TEST_CLIPS)
    write_demo_media(quality, np.arange(N_TEST_CLIPS) % 2, folder / "media")
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{folder / 'ratingparty.db'}",
        "RATINGPARTY_ADMIN_KEY": ADMIN_KEY,
        "RATINGPARTY_SEED": "0",
    }
    command = [sys.executable, "-m", "uvicorn", "--factory", "api.app:create_app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    log = (folder / "server.log").open("w")
    root = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30.0
    )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited: {(folder / 'server.log').read_text()}")
            try:
                if client.get("/static/rate.js").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start in time")
            time.sleep(0.1)
        yield Service(url, folder / "ratingparty.db", folder / "media", client)
    finally:
        client.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[object]:
    """One headless chromium per test module. Not per session: Playwright's sync API keeps an
    event loop running in this thread while it is open, which later asyncio tests cannot share."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def context(browser) -> Iterator[object]:  # type: ignore[no-untyped-def]
    """A fresh browser context (empty storage); page errors fail the test."""
    created = browser.new_context(viewport={"width": 1280, "height": 820})
    created.set_default_timeout(10_000)
    errors: list[str] = []
    created.on("weberror", lambda error: errors.append(str(error.error)))
    yield created
    created.close()
    assert not errors, errors


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """The folder for screenshots (gitignored)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
