"""Campaign management (admin key): campaigns, their settings and state, clip batches, raters
(registration, stats)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, Response, get, patch, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter

from api import schemas
from api.auth import admin_guard
from api.bulk import BulkFormat
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

    @patch(
        "/{campaign_id:int}",
        operation_id="updateCampaign",
        summary="Change a campaign's settings",
        responses=error_responses(400, 401, 404, 409, 413, 415, 503),
    )
    async def update(
        self, campaign_id: int, data: schemas.CampaignUpdate, request: Request, service: Service
    ) -> schemas.Campaign:
        """Name and lease at any time; `emoji_levels` null turns rating tasks off, a number
        turns them on (another scale only while no rating was given); `pair_scope` while no
        label exists. `ties` and `criteria` never change (409 says why)."""
        body = await strict_body(request, schemas.CampaignUpdate)
        return await service.update_campaign(campaign_id, body)

    @post(
        "/{campaign_id:int}/pause",
        operation_id="pauseCampaign",
        summary="Pause a campaign",
        status_code=200,
        responses=error_responses(401, 404, 409, 503),
    )
    async def pause(self, campaign_id: int, service: Service) -> schemas.Campaign:
        """No new tasks until resumed; answers to the tasks already out still count."""
        return await service.change_state(campaign_id, "pause")

    @post(
        "/{campaign_id:int}/resume",
        operation_id="resumeCampaign",
        summary="Resume a paused campaign",
        status_code=200,
        responses=error_responses(401, 404, 409, 503),
    )
    async def resume(self, campaign_id: int, service: Service) -> schemas.Campaign:
        """Hand out tasks again."""
        return await service.change_state(campaign_id, "resume")

    @post(
        "/{campaign_id:int}/close",
        operation_id="closeCampaign",
        summary="Close a campaign",
        status_code=200,
        responses=error_responses(401, 404, 409, 503),
    )
    async def close(self, campaign_id: int, service: Service) -> schemas.Campaign:
        """No new tasks; the open assignments are withdrawn (an answer to one gets a 410)."""
        return await service.change_state(campaign_id, "close")

    @post(
        "/{campaign_id:int}/reopen",
        operation_id="reopenCampaign",
        summary="Reopen a closed campaign",
        status_code=200,
        responses=error_responses(401, 404, 409, 503),
    )
    async def reopen(self, campaign_id: int, service: Service) -> schemas.Campaign:
        """Hand out tasks again."""
        return await service.change_state(campaign_id, "reopen")

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
        "/{campaign_id:int}/clips/bulk",
        operation_id="addClipsBulk",
        summary="Add clips in bulk",
        # the body is read as a stream, never held whole; the service bounds it
        # (max_bulk_bytes, max_bulk_clips)
        request_max_body_size=None,
        responses=error_responses(400, 401, 404, 409, 413, 503),
    )
    async def add_clips_bulk(
        self,
        campaign_id: int,
        request: Request,
        service: Service,
        upload_format: Annotated[
            BulkFormat, Parameter(query="format", description="jsonl (default) or csv")
        ] = "jsonl",
    ) -> schemas.BulkClipsAdded:
        """A streamed body of clips, one JSON object a line or CSV rows under a header
        (external_id, uri, group, context, one column per criterion); every row is checked
        and the upload is added all or nothing."""
        return await service.add_clips_bulk(campaign_id, upload_format, request.stream())

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

    @post(
        "/{campaign_id:int}/clips/{clip_id:int}/retire",
        operation_id="retireClip",
        summary="Retire a clip",
        status_code=200,
        responses=error_responses(401, 404, 503),
    )
    async def retire_clip(
        self, campaign_id: int, clip_id: int, service: Service
    ) -> schemas.ClipStatus:
        """Never offered again while retired (also a withheld clip: the operator's decision);
        its open assignments are withdrawn, its labels stay in the log and the posterior."""
        return await service.retire_clip(campaign_id, clip_id, retired=True)

    @post(
        "/{campaign_id:int}/clips/{clip_id:int}/restore",
        operation_id="restoreClip",
        summary="Restore a clip",
        status_code=200,
        responses=error_responses(401, 404, 409, 503),
    )
    async def restore_clip(
        self, campaign_id: int, clip_id: int, service: Service
    ) -> schemas.ClipStatus:
        """Offered again, also when the campaign's policy withheld it; the skips of its tasks
        and the reports of it so far no longer count. A clip never retired, withheld or
        withdrawn is a 409."""
        return await service.retire_clip(campaign_id, clip_id, retired=False)

    @get(
        "/{campaign_id:int}/withheld",
        operation_id="withheldClips",
        summary="Clips the campaign's policy withholds",
        responses=error_responses(401, 404),
    )
    async def withheld(self, campaign_id: int, service: Service) -> schemas.WithheldClips:
        """Each withheld clip with why: its safety score below the threshold, or the raters'
        reports (who and when); restore or retire it with the clip calls."""
        return await service.withheld(campaign_id)

    @post(
        "/{campaign_id:int}/raters/{rater_id:int}/deactivate",
        operation_id="deactivateRater",
        summary="Deactivate a rater",
        status_code=200,
        responses=error_responses(401, 404, 503),
    )
    async def deactivate_rater(
        self, campaign_id: int, rater_id: int, service: Service
    ) -> schemas.RaterStatus:
        """Their token gets no new tasks (403); their open assignments are withdrawn (410);
        their labels stay."""
        return await service.set_rater_active(campaign_id, rater_id, active=False)

    @post(
        "/{campaign_id:int}/raters/{rater_id:int}/reactivate",
        operation_id="reactivateRater",
        summary="Reactivate a rater",
        status_code=200,
        responses=error_responses(401, 404, 503),
    )
    async def reactivate_rater(
        self, campaign_id: int, rater_id: int, service: Service
    ) -> schemas.RaterStatus:
        """Their token gets tasks again."""
        return await service.set_rater_active(campaign_id, rater_id, active=True)

    @post(
        "/{campaign_id:int}/gold",
        operation_id="addGold",
        summary="Add gold pairs",
        responses=error_responses(400, 401, 404, 409, 413, 415, 503),
    )
    async def add_gold(
        self, campaign_id: int, data: schemas.GoldIn, request: Request, service: Service
    ) -> schemas.GoldAdded:
        """Pairs whose answer is known (clips by external id), all or nothing; mixed into
        raters' tasks at the campaign's `gold_rate` to test them, never moving a clip."""
        return await service.add_gold(campaign_id, await strict_body(request, schemas.GoldIn))

    @get(
        "/{campaign_id:int}/gold",
        operation_id="goldPairs",
        summary="Gold pairs",
        responses=error_responses(401, 404),
    )
    async def gold(self, campaign_id: int, service: Service) -> schemas.GoldList:
        """The gold pairs and the campaign's gold rate."""
        return await service.gold_pairs(campaign_id)

    @get(
        "/{campaign_id:int}/skipped",
        operation_id="skipped",
        summary="What repeated skips withdrew",
        responses=error_responses(401, 404),
    )
    async def skipped(self, campaign_id: int, service: Service) -> schemas.SkipFlags:
        """Pairs (or ratings) skipped by `skip_limit` distinct raters, and clips whose tasks
        were, withdrawn for everyone until a restore."""
        return await service.skip_flags(campaign_id)

    @post(
        "/{campaign_id:int}/imports",
        operation_id="importJudgments",
        summary="Import past judgments",
        responses={
            200: ResponseSpec(
                schemas.ImportOut,
                description="this key was imported before: its first result, duplicate true",
                generate_examples=False,
            ),
            **error_responses(400, 401, 404, 409, 413, 415, 503),
        },
    )
    async def import_judgments(
        self, campaign_id: int, data: schemas.ImportIn, request: Request, service: Service
    ) -> Response[schemas.ImportOut]:
        """CSV or JSON lines (rater, left, right, choice or level, time), all or nothing, in
        order; idempotent by `key`."""
        body = await strict_body(request, schemas.ImportIn)
        out = await service.import_judgments(campaign_id, body)
        return Response(out, status_code=200 if out.duplicate else 201)
