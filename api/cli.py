"""`python -m api` (what `make serve` runs): start the service with uvicorn.

Prints the admin key when it was generated just now (it is stored next to the database and
never printed again), a quick start of shell lines that make a campaign of their own, and,
with --demo, which campaign the demo is.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import socket
import sys
from dataclasses import replace
from functools import partial
from importlib import metadata
from typing import TYPE_CHECKING

from api.db import check_schema
from api.demo import DemoError
from api.logs import configure_logging
from api.ownership import DatabaseInUse, hold_sqlite
from api.settings import Settings, key_file, load_or_create_admin_key

if TYPE_CHECKING:
    from litestar import Litestar

QUICK_START = """\
ratingparty is serving on {base}  (OpenAPI: {base}/schema, health: {base}/healthz)
Quick start (KEY is the admin key{key_hint}); it makes a campaign of its own, CID:
  A="Authorization: Bearer $KEY"; J='content-type: application/json'
  pick() {{ python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }}
  CID=$(curl -s -X POST {base}/v1/campaigns -H "$A" -H "$J" \\
    -d '{{"name": "party", "criteria": ["alignment"]}}' | pick '["id"]'); echo "campaign $CID"
  curl -s -X POST {base}/v1/campaigns/$CID/clips -H "$A" -H "$J" -d '{{"clips": [
      {{"external_id": "a", "uri": "https://example.org/a.mp4", "group": "p1",
        "scores": {{"alignment": 0.8}}}},
      {{"external_id": "b", "uri": "https://example.org/b.mp4", "group": "p1",
        "scores": {{"alignment": null}}}}]}}'
  TOKEN=$(curl -s -X POST {base}/v1/campaigns/$CID/raters -H "$A" -H "$J" \\
    -d '{{"name": "ann"}}' | pick '["token"]')
  AID=$(curl -s -X POST {base}/v1/campaigns/$CID/assignments \\
    -H "Authorization: Bearer $TOKEN" | pick '["assignment"]["id"]')
  curl -s -X POST {base}/v1/assignments/$AID/judgment -H "Authorization: Bearer $TOKEN" \\
    -H "$J" -d '{{"choice": "left"}}'
  curl -s {base}/v1/campaigns/$CID/leaderboard -H "$A"
Pages: {base}/dashboard/$CID?key=$KEY (its "New rater link" button opens {base}/rate/$CID?token=...)
From Python: the `client` package (Client, AsyncClient; docs/SERVICE.md).
"""
DEMO_LINE = (
    "Demo: campaign {id} is the demo ({n_clips} synthetic clips): {base}/dashboard/{id}?key=$KEY"
)


def package_version() -> str:
    """The installed ratingparty version ("unknown" when run from an uninstalled tree)."""
    try:
        return metadata.version("ratingparty")
    except metadata.PackageNotFoundError:
        return "unknown"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (each defaults to its environment variable)."""
    parser = argparse.ArgumentParser(prog="python -m api", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("HOST") or "127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 8000))
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or None)
    parser.add_argument(
        "--demo",
        action="store_true",
        default=os.environ.get("DEMO", "").lower() in ("1", "true", "yes"),
        help="seed a demo campaign of synthetic clips (once)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("RATINGPARTY_ENGINE_THREADS") or 1),
        help="torch threads of the engine (default 1: the event loop needs the other core, and "
        "more threads than free cores make torch's thread pool spin, 10-50x slower)",
    )
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Resolve settings and the admin key, print the quick start, run uvicorn."""
    import torch
    import uvicorn

    from api.app import create_app
    from api.server import uvicorn_config

    args = parse(argv)
    torch.set_num_threads(max(1, args.threads))
    env = dict(os.environ)
    if args.database_url:
        env["DATABASE_URL"] = args.database_url
    url = env.get("DATABASE_URL") or Settings.database_url
    key_hint = ""
    try:
        if not env.get("RATINGPARTY_ADMIN_KEY"):
            key, created = load_or_create_admin_key(url)
            path = key_file(url)
            if created:
                print(f"Generated the admin key (stored in {path}; shown only now):\n\n  {key}\n")
            key_hint = f"; KEY=$(cat {path})"
        settings = Settings.from_env(env)
        # held for the life of the process: a second server on this SQLite file stops here
        hold_sqlite(settings.database_url)
        check_schema(settings.database_url)  # a newer version's database: refused, untouched
    except (ValueError, OSError, DatabaseInUse) as error:
        # a configuration mistake: one line that says what to fix, no traceback
        print(f"ratingparty: cannot start: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.demo:
        settings = replace(settings, demo=True)
    if settings.public_url is None:
        # where other processes on the same database send this one's campaigns' requests
        host = socket.gethostname() if args.host in ("0.0.0.0", "::") else args.host
        settings = replace(settings, public_url=f"http://{host}:{args.port}")
    configure_logging(args.log_level, secrets=[settings.admin_key])
    base = f"http://{args.host}:{args.port}"
    print(QUICK_START.format(base=base, key_hint=key_hint), file=sys.stdout, flush=True)
    app = create_app(settings)
    if settings.demo:
        app.on_startup.append(partial(_announce_demo, base=base))
    # Everything loaded so far (torch, Litestar, SQLAlchemy: ~275k objects) lives as long as the
    # process; frozen, the cyclic GC's full collections stop walking it (each a stall, paid by
    # whichever thread allocates, the event loop included).
    gc.freeze()
    config = uvicorn_config(
        app,
        settings,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,  # the app's own access log (RATINGPARTY_ACCESS_LOG) redacts queries
    )
    uvicorn.Server(config).run()


async def _announce_demo(app: Litestar, *, base: str) -> None:
    """Name the demo campaign once `sim demo` has seeded it (its id is whatever the database
    gave it, not necessarily 1), without holding up the start: the seeding needs the server
    to listen."""

    async def announce() -> None:
        try:
            campaign = await app.state.demo
        except DemoError as error:
            print(f"ratingparty: the demo was not seeded: {error}", file=sys.stderr, flush=True)
            return
        print(DEMO_LINE.format(id=campaign.id, n_clips=campaign.n_clips, base=base), flush=True)

    app.state.demo_announcer = asyncio.create_task(announce())


__all__ = ["main", "package_version", "parse"]
