"""`make serve DEMO=1`: the demo campaign of synthetic clips, seeded once by the simulator's
`sim demo` command through this service's public API (api/ imports nothing of sim/).

The command runs as a child process once the server listens; the campaign it made (or found:
seeding is idempotent by the name "demo") is what the server announces.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("ratingparty.api")
SEED_TIMEOUT_S = 120.0  # the child waits for the server, draws 60 pictures and uploads them


class DemoError(RuntimeError):
    """The demo could not be seeded (the child's own message says why)."""


@dataclass(frozen=True)
class DemoCampaign:
    """The demo campaign as the seeding command reported it."""

    id: int
    n_clips: int


async def seed_demo(base_url: str, admin_key: str, media: Path) -> DemoCampaign:
    """Run `python -m sim demo` against the service at `base_url`, its pictures into `media`.

    The admin key travels in the child's environment, never on its command line (which any
    user of the machine can read).

    Raises:
        DemoError: the command failed or did not finish in SEED_TIMEOUT_S.
    """
    command = [sys.executable, "-m", "sim.cli", "demo", base_url, "--media", str(media)]
    child = await asyncio.create_subprocess_exec(
        *command,
        env={**os.environ, "RATINGPARTY_ADMIN_KEY": admin_key},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(child.communicate(), SEED_TIMEOUT_S)
    except (TimeoutError, asyncio.CancelledError) as stopped:
        child.kill()  # a server shutting down takes its seeding child along
        await child.wait()
        if isinstance(stopped, asyncio.CancelledError):
            raise
        raise DemoError(f"`sim demo` did not finish in {SEED_TIMEOUT_S:g} s") from None
    if child.returncode != 0:
        raise DemoError(f"`sim demo` failed: {err.decode(errors='replace').strip()[-2000:]}")
    reported = json.loads(out.decode().strip().splitlines()[-1])
    campaign = DemoCampaign(int(reported["id"]), int(reported["n_clips"]))
    log.info("the demo is campaign %s with %s clips", campaign.id, campaign.n_clips)
    return campaign


__all__ = ["DemoCampaign", "DemoError", "seed_demo"]
