"""`GET /metrics` (admin key): the service's metrics in the Prometheus text format."""

from __future__ import annotations

from litestar import Request, Response, get
from litestar.openapi.datastructures import ResponseSpec

from api.auth import admin_guard
from api.errors import error_responses
from api.metrics import Metrics

# the text exposition format; Litestar appends "; charset=utf-8" to text types
MEDIA_TYPE = "text/plain; version=0.0.4"


@get(
    "/metrics",
    operation_id="metrics",
    tags=["health"],
    summary="Prometheus metrics",
    guards=[admin_guard],
    sync_to_thread=False,
    responses={
        200: ResponseSpec(str, description="the Prometheus text format", media_type=MEDIA_TYPE),
        **error_responses(401),
    },
)
def metrics(request: Request) -> Response[bytes]:
    """Requests and latencies by route, judgments, queue depth, engine time per call and per
    task, replay times, database errors."""
    registry: Metrics = request.app.state.metrics
    # the media type set here, not on the handler: the handler's would label its 401 too
    return Response(registry.render(), media_type=MEDIA_TYPE)
