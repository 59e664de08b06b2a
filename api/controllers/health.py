"""`GET /healthz`: the process is up and the database answers."""

from __future__ import annotations

from litestar import Response, get
from litestar.openapi.datastructures import ResponseSpec

from api import schemas
from api.service import Service


@get(
    "/healthz",
    operation_id="health",
    tags=["health"],
    summary="Liveness and database check",
    responses={
        503: ResponseSpec(
            schemas.Health, description="the database does not answer", generate_examples=False
        )
    },
)
async def health(service: Service) -> Response[schemas.Health]:
    """200 when the database answers, else 503."""
    ok = await service.healthy()
    body = schemas.Health(
        status="ok" if ok else "degraded",
        database="ok" if ok else "unreachable",
        campaigns_loaded=service.loaded,
    )
    return Response(body, status_code=200 if ok else 503)
