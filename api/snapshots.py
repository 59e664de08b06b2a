"""Snapshots of a campaign's engine state: what they hold, how they are written and read.

A snapshot is the engine `Campaign` itself (its posterior, clip registry, rater book, task
book and history), written with `torch.save` and read with `torch.load(weights_only=True)`:
torch's restricted unpickler, which builds tensors and plain containers and, beyond them,
only the classes named in `safe_globals()` (the engine's own classes, and `itertools.count`
for its id counters). A snapshot is our own data in our own database, but a pickle read
without that restriction would run whatever code a changed row named; this one cannot.

A snapshot is used only when its `format` (this module's version, torch's and the
package's) and the digest of the campaign's engine settings both equal the current ones;
otherwise, or when it does not load, the campaign replays its whole log (the log is the
truth; a snapshot only saves time) and the next snapshot replaces it.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import io
import itertools
import json
import os
import pkgutil
from collections.abc import Callable
from functools import cache, partial
from importlib import metadata
from typing import Any, BinaryIO

import torch

import engine
from engine import Campaign

SNAPSHOT_VERSION = 5  # bump when what a snapshot holds, or how it is read, changes


def snapshot_format() -> str:
    """What a snapshot written now is: this module's version, torch's and the package's."""
    try:
        package = metadata.version("ratingparty")
    except metadata.PackageNotFoundError:
        package = "unknown"
    return f"v{SNAPSHOT_VERSION} torch {torch.__version__} ratingparty {package}"


def config_digest(stored_config: dict[str, Any]) -> str:
    """A digest of a campaign's stored engine settings (a change of scope or scale rebuilds
    the engine, and a snapshot of the old one must not load)."""
    return hashlib.sha256(json.dumps(stored_config, sort_keys=True).encode()).hexdigest()


@cache
def safe_globals() -> tuple[type, ...]:
    """The classes a snapshot may name: every class the engine's modules define."""
    classes: list[type] = [itertools.count]
    for module in pkgutil.iter_modules(engine.__path__):
        loaded = importlib.import_module(f"engine.{module.name}")
        classes.extend(
            value
            for value in vars(loaded).values()
            if inspect.isclass(value) and value.__module__.startswith("engine.")
        )
    return tuple(dict.fromkeys(classes))


def dump(campaign: Campaign) -> bytes:
    """The campaign as snapshot bytes."""
    buffer = io.BytesIO()
    torch.save(campaign, buffer)
    return buffer.getvalue()


def write_whole(path: str, dump: Callable[[BinaryIO], object]) -> None:
    """`dump(file)` into the file `path`: written to `path` + ".part" and renamed, so whoever
    waits for `path` (`api.restore.read_when_whole`) finds it whole."""
    part = f"{path}.part"
    with open(part, "wb") as file:
        dump(file)
    os.replace(part, path)


def write(campaign: Campaign, path: str) -> None:
    """The campaign's snapshot bytes into the file `path`, found whole (`write_whole`)."""
    write_whole(path, partial(torch.save, campaign))


def load(data: bytes, like: Campaign) -> Campaign:
    """A campaign from snapshot bytes, with no task pending (the service holds again the
    tasks of the open assignments it restores).

    Raises:
        ValueError: the bytes are not a campaign on `like`'s device and dtype, or name a class
            outside `safe_globals()`.
    """
    try:
        with torch.serialization.safe_globals(list(safe_globals())):
            campaign = torch.load(io.BytesIO(data), weights_only=True, map_location=like.device)
    except Exception as error:
        raise ValueError(f"the snapshot does not load: {error}".splitlines()[0]) from error
    if not isinstance(campaign, Campaign):
        raise ValueError(f"the snapshot holds a {type(campaign).__name__}, not a Campaign")
    if (campaign.device, campaign.dtype) != (like.device, like.dtype):
        raise ValueError(
            f"the snapshot was taken on {campaign.device} in {campaign.dtype}, this engine runs "
            f"on {like.device} in {like.dtype}"
        )
    for task in campaign.pending:
        campaign.release(task.id)
    return campaign


__all__ = [
    "SNAPSHOT_VERSION",
    "config_digest",
    "dump",
    "load",
    "safe_globals",
    "snapshot_format",
    "write",
]
