"""Synthetic clips for demos and the service load benchmark, as the HTTP API takes them, and
the demo campaign seeded through the public API (`sim demo`, which `make serve DEMO=1` runs).

A `SyntheticWorld` (sim/worlds.py) supplies the truth and the reward model's scores; this
module only renames them into clip records (`external_id`, `uri`, `group`, `context`,
`scores`) and keeps each clip's true quality for simulated raters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client import Client, models
from sim.demo_media import picture_clips
from sim.worlds import SyntheticSpec, SyntheticWorld

DEMO_NAME = "demo"


@dataclass(frozen=True)
class DemoClips:
    """Clips ready for `POST /v1/campaigns/{id}/clips` and their true qualities (JOD).

    Attributes:
        criteria: the reward model's criterion names (the campaign's criteria).
        clips: one dict per clip, in the API's clip shape.
        quality: external id -> true quality.
    """

    criteria: tuple[str, ...]
    clips: list[dict[str, Any]]
    quality: dict[str, float]


def demo_clips(
    n_items: int = 60, n_groups: int = 12, *, rm_correlation: float = 0.7, seed: int = 0
) -> DemoClips:
    """`n_items` synthetic clips in `n_groups` prompts (up to 3 prompt categories, 5 criteria,
    5 % of the scores missing), with a reward model of correlation `rm_correlation`."""
    spec = SyntheticSpec(
        n_items=n_items,
        n_groups=n_groups,
        n_contexts=min(3, n_groups),
        rm_correlation=rm_correlation,
        missing_scores=0.05,
        pair_scope="group",
    )
    world = SyntheticWorld(spec, seed)
    problem = world.problem
    categories = ("animals", "sports", "landscapes")
    clips = []
    for i in range(n_items):
        group = int(problem.groups[i])
        row = problem.scores[i] if problem.scores is not None else []
        scores = {
            name: None if math.isnan(value) else round(float(value), 4)
            for name, value in zip(problem.criteria, row, strict=True)
        }
        clips.append(
            {
                "external_id": f"clip-{i:05d}",
                "uri": f"https://example.org/demo/prompt-{group:04d}/clip-{i:05d}.mp4",
                "group": f"prompt-{group:04d}",
                "context": categories[int(problem.contexts[i]) % len(categories)],
                "scores": scores,
            }
        )
    quality = {clip["external_id"]: float(q) for clip, q in zip(clips, world.quality, strict=True)}
    return DemoClips(tuple(problem.criteria), clips, quality)


def seed_demo(
    client: Client, media: str | Path, n_items: int = 60, seed: int = 0
) -> models.Campaign:
    """The campaign named "demo", made through the API with `n_items` synthetic clips (and their
    pictures drawn into `media`, the folder the service serves under `/media/`) when no
    campaign has that name yet; an existing one is returned as it is.

    Args:
        client: a client holding the admin key.
        media: the service's media folder.
        n_items: clips in the demo (in prompts of 5).
        seed: the synthetic world's seed.
    """
    for campaign in client.campaigns():
        if campaign.name == DEMO_NAME:
            return campaign
    data = demo_clips(n_items, n_groups=max(1, n_items // 5), seed=seed)
    campaign = client.create_campaign(DEMO_NAME, criteria=list(data.criteria), emoji_levels=5)
    client.add_clips(campaign.id, picture_clips(data.clips, data.quality, media))
    return client.campaign(campaign.id)


__all__ = ["DEMO_NAME", "DemoClips", "demo_clips", "seed_demo"]
