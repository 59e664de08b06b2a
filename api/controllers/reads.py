"""Read-outs: leaderboard (admin key or a rater of the campaign), weights, progress and export
(admin key). The raters' read-out shares its path with their registration (campaigns.py)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, get
from litestar.params import Parameter
from litestar.response import Stream

from api import schemas
from api.auth import admin_guard, bearer, is_admin
from api.db import MAX_ROW_ID
from api.errors import Unauthorized, error_responses
from api.export import MEDIA_TYPES, ExportFormat, ExportKind
from api.service import DEFAULT_LEVEL, DEFAULT_PAGE, MAX_LEVEL, MAX_PAGE, Service

Level = Annotated[float, Parameter(gt=0, le=MAX_LEVEL, description="central credible level")]


class ReadController(Controller):
    """`GET /v1/campaigns/{id}/...`."""

    path = "/v1/campaigns/{campaign_id:int}"
    tags = ("results",)

    @get(
        "/leaderboard",
        operation_id="leaderboard",
        summary="Clips by posterior rank",
        responses=error_responses(400, 401, 404),
    )
    async def leaderboard(
        self,
        campaign_id: int,
        request: Request,
        service: Service,
        level: Level = DEFAULT_LEVEL,
        limit: Annotated[
            int, Parameter(ge=1, le=MAX_PAGE, description=f"rows per page ({DEFAULT_PAGE})")
        ] = DEFAULT_PAGE,
        offset: Annotated[
            int, Parameter(ge=0, le=MAX_ROW_ID, description="rows to skip, best first")
        ] = 0,
        prompt: Annotated[
            str | None,
            Parameter(min_length=1, max_length=256, description="only this prompt's clips"),
        ] = None,
        external_id: Annotated[
            str | None,
            Parameter(min_length=1, max_length=256, description="only the clip of this id"),
        ] = None,
    ) -> schemas.Leaderboard:
        """Mean, sd, credible interval, rank and labels per clip, best first, a page at a
        time (`limit`, `offset`; `total` counts every matching clip), optionally of one
        prompt's clips or of the one clip with an external id (none when no clip has it)."""
        if not (is_admin(request) or service.is_rater_of(bearer(request), campaign_id)):
            raise Unauthorized(
                detail="the leaderboard needs the admin key or a rater token of this campaign"
            )
        return await service.leaderboard(campaign_id, level, limit, offset, prompt, external_id)

    @get(
        "/weights",
        operation_id="weights",
        summary="Criterion weights",
        guards=[admin_guard],
        responses=error_responses(400, 401, 404),
    )
    async def weights(
        self, campaign_id: int, service: Service, level: Level = DEFAULT_LEVEL
    ) -> schemas.Weights:
        """The criterion weights with credible intervals, globally and per context."""
        return await service.weights(campaign_id, level)

    @get(
        "/progress",
        operation_id="progress",
        summary="Labels vs accuracy",
        guards=[admin_guard],
        responses=error_responses(401, 404),
    )
    async def progress(self, campaign_id: int, service: Service) -> schemas.Progress:
        """Points of labels against the expected Kendall tau of the ranking."""
        return await service.progress(campaign_id)

    @get(
        "/export",
        operation_id="export",
        summary="Export judgments",
        guards=[admin_guard],
        responses=error_responses(400, 401, 404),
    )
    async def export(
        self,
        campaign_id: int,
        service: Service,
        export_format: Annotated[ExportFormat, Parameter(query="format")] = "csv",
        kind: ExportKind = "judgments",
        level: Level = DEFAULT_LEVEL,
    ) -> Stream:
        """All judgments (`kind=judgments`), the preference pairs prompt/chosen/rejected
        (`kind=preferences`), every clip with its status (`kind=clips`: active, retired,
        withheld:threshold or withheld:reports), or every clip by rank (`kind=leaderboard`,
        at `level`), as CSV or JSON lines, streamed."""
        chunks = await service.export(campaign_id, kind, export_format, level)
        name = f"campaign-{campaign_id}-{kind}.{export_format}"
        return Stream(
            chunks,
            media_type=MEDIA_TYPES[export_format],
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
