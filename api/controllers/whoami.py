"""`GET /v1/whoami`: the rater a token belongs to.

The cheapest authenticated call: the same token check as the hot path (`rater_guard`'s lookup,
no database, no campaign), so a load test can measure what the HTTP stack alone serves
(benchmarks/service_load.py's HTTP ceiling).
"""

from __future__ import annotations

from litestar import Request, get

from api import schemas
from api.auth import bearer
from api.errors import error_responses


@get(
    "/v1/whoami",
    operation_id="whoami",
    tags=["rating"],
    summary="The rater this token belongs to",
    responses=error_responses(401),
)
async def whoami(request: Request) -> schemas.Whoami:
    """The token's rater and campaign; 401 without a known rater token."""
    rater_id, campaign_id = request.app.state.service.rater_ids(bearer(request))
    return schemas.Whoami(rater_id=rater_id, campaign_id=campaign_id)
