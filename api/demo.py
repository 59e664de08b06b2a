"""`make serve DEMO=1`: a demo campaign of synthetic clips (from sim.demo), seeded once.

The only module of api/ that imports sim/, and only for its data generator.
"""

from __future__ import annotations

import logging

from api import schemas
from api.pages import media_dir
from api.service import Service
from sim.demo import demo_clips
from sim.demo_media import picture_clips

DEMO_NAME = "demo"
log = logging.getLogger("ratingparty.api")


async def seed_demo(service: Service, n_items: int = 60, seed: int = 0) -> int:
    """The demo campaign's id, creating it with `n_items` clips when no campaign is named
    "demo" yet."""
    for campaign in await service.list_campaigns():
        if campaign.name == DEMO_NAME:
            return campaign.id
    data = demo_clips(n_items, n_groups=max(1, n_items // 5), seed=seed)
    campaign = await service.create_campaign(
        schemas.CampaignCreate(name=DEMO_NAME, criteria=list(data.criteria), emoji_levels=5)
    )
    pictures = picture_clips(data.clips, data.quality, media_dir(service.settings.database_url))
    clips = [schemas.ClipIn(**clip) for clip in pictures]
    await service.add_clips(campaign.id, schemas.ClipsIn(clips=clips))
    log.info("seeded demo campaign %s with %s clips", campaign.id, n_items)
    return campaign.id


__all__ = ["DEMO_NAME", "seed_demo"]
