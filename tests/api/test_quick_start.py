"""What `make serve DEMO=1` prints: the quick start works as printed and acts on a campaign
of its own, the demo line names the demo campaign; `python -m api --version`."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from importlib import metadata
from pathlib import Path

import httpx
import pytest

DEMO_CLIPS = 60


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _lines(process: subprocess.Popen[str]) -> queue.Queue[str]:
    """The server's output, line by line, read on a thread (a pipe read would block)."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            lines.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _read_until(lines: queue.Queue[str], prefix: str, seen: list[str]) -> str:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        seen.append(line)
        if line.startswith(prefix):
            return line
    pytest.fail(f"no line starting {prefix!r} in:\n" + "\n".join(seen))


def _shell_block(output: list[str]) -> str:
    """The quick start's shell lines: the indented block after 'Quick start'."""
    start = next(k for k, line in enumerate(output) if line.startswith("Quick start"))
    block = []
    for line in output[start + 1 :]:
        if not line.startswith("  "):
            break
        block.append(line[2:])
    return "\n".join(block)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("curl") is None, reason="the printed quick start uses curl")
def test_demo_quick_start_acts_on_a_campaign_of_its_own(tmp_path: Path) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "RATINGPARTY_ADMIN_KEY"}
    env |= {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "RATINGPARTY_DEVICE": "cpu",
        "DEMO": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "api", "--port", str(port), "--log-level", "warning"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: list[str] = []
    try:
        lines = _lines(process)
        demo_line = _read_until(lines, "Demo: campaign", seen)
        key = (tmp_path / "admin_key").read_text().strip()
        admin = {"Authorization": f"Bearer {key}"}
        campaigns = httpx.get(f"{base}/v1/campaigns", headers=admin, timeout=30).json()
        demo = next(c for c in campaigns["campaigns"] if c["name"] == "demo")
        assert demo_line.startswith(f"Demo: campaign {demo['id']} is the demo ({DEMO_CLIPS} ")
        assert f"/dashboard/{demo['id']}?key=" in demo_line

        script = _shell_block(seen)
        assert "/campaigns/1/" not in script and "/assignments/1/" not in script
        shell = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            env={**os.environ, "KEY": key},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert shell.returncode == 0, shell.stdout + shell.stderr
        created = int(shell.stdout.split("campaign ", 1)[1].split()[0])
        assert created != demo["id"]
        mine = httpx.get(f"{base}/v1/campaigns/{created}", headers=admin, timeout=30).json()
        assert (mine["name"], mine["n_clips"], mine["n_judgments"]) == ("party", 2, 1)
        untouched = httpx.get(f"{base}/v1/campaigns/{demo['id']}", headers=admin, timeout=30)
        assert (untouched.json()["n_clips"], untouched.json()["n_judgments"]) == (DEMO_CLIPS, 0)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def test_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "api", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"python -m api {metadata.version('ratingparty')}"
