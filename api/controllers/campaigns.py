"""Campaign management (admin key): campaigns, clip batches, raters (registration, stats)."""

from __future__ import annotations

from litestar import Controller, Request, get, post

from api import schemas
from api.auth import admin_guard
from api.controllers._body import strict_body
from api.errors import error_responses
from api.service import Service


class CampaignController(Controller):
    """`/v1/campaigns`: create, list, read; add clips; register raters."""

    path = "/v1/campaigns"
    tags = ("campaigns",)
    guards = (admin_guard,)

    @post(
        "/",
        operation_id="createCampaign",
        summary="Create a campaign",
        responses=error_responses(400, 401, 413, 415),
    )
    async def create(
        self, data: schemas.CampaignCreate, request: Request, service: Service
    ) -> schemas.Campaign:
        """A new campaign: criteria, pairing scope, ties, emoji levels and lease time."""
        return await service.create_campaign(await strict_body(request, schemas.CampaignCreate))

    @get(
        "/",
        operation_id="listCampaigns",
        summary="List campaigns",
        responses=error_responses(401),
    )
    async def list(self, service: Service) -> schemas.CampaignList:
        """Every campaign with its counts."""
        return schemas.CampaignList(campaigns=await service.list_campaigns())

    @get(
        "/{campaign_id:int}",
        operation_id="getCampaign",
        summary="Read a campaign",
        responses=error_responses(401, 404),
    )
    async def read(self, campaign_id: int, service: Service) -> schemas.Campaign:
        """One campaign with its counts."""
        return await service.get_campaign(campaign_id)

    @post(
        "/{campaign_id:int}/clips",
        operation_id="addClips",
        summary="Add clips",
        responses=error_responses(400, 401, 404, 409, 413, 415),
    )
    async def add_clips(
        self, campaign_id: int, data: schemas.ClipsIn, request: Request, service: Service
    ) -> schemas.ClipsAdded:
        """Add a batch of clips (also mid-campaign); all or nothing."""
        return await service.add_clips(campaign_id, await strict_body(request, schemas.ClipsIn))

    @post(
        "/{campaign_id:int}/raters",
        operation_id="registerRater",
        summary="Register a rater",
        responses=error_responses(400, 401, 404, 413, 415),
    )
    async def register_rater(
        self,
        campaign_id: int,
        request: Request,
        service: Service,
        data: schemas.RaterIn | None = None,
    ) -> schemas.RaterCreated:
        """A new rater and their token (shown once; only its hash is stored); the body may be
        left out."""
        body = await strict_body(request, schemas.RaterIn, empty=schemas.RaterIn())
        return await service.register_rater(campaign_id, body)

    @get(
        "/{campaign_id:int}/raters",
        operation_id="raters",
        summary="Rater reliability",
        responses=error_responses(401, 404),
    )
    async def raters(self, campaign_id: int, service: Service) -> schemas.Raters:
        """Labels, learned noise and keep probability, and flags per rater."""
        return await service.raters(campaign_id)
