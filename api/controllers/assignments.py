"""The rater's calls (rater token): the next assignment and its judgment.

These two are the service's hot path (two requests per label), so they take the `Service` from
the app state instead of as a dependency: Litestar's dependency resolution costs event-loop
CPU on every request, a measurable share of what a label costs the loop.
"""

from __future__ import annotations

from litestar import Controller, Request, Response, post
from litestar.openapi.datastructures import ResponseSpec

from api import schemas
from api.auth import bearer, rater_guard
from api.controllers._body import strict_body
from api.errors import error_responses
from api.service import Service

# a judgment is a few dozen bytes: a valid token never gets the service to buffer more
JUDGMENT_MAX_BODY_BYTES = 1_024


class AssignmentController(Controller):
    """`POST /v1/campaigns/{id}/assignments`, `POST /v1/assignments/{id}/judgment` and
    `POST /v1/assignments/{id}/report`."""

    path = "/v1"
    tags = ("rating",)

    @post(
        "/campaigns/{campaign_id:int}/assignments",
        operation_id="nextAssignment",
        summary="The next task for this rater",
        responses={
            200: ResponseSpec(
                schemas.AssignmentOut,
                description="nothing is left for this rater: assignment null, message why",
                generate_examples=False,
            ),
            **error_responses(401, 403, 404, 429, 503),
        },
    )
    async def next_assignment(
        self, campaign_id: int, request: Request
    ) -> Response[schemas.AssignmentOut]:
        """201 with a pair (left/right order random) or a clip to rate, under a lease; 200 with
        `assignment: null` and a message when nothing is left for this rater."""
        out = await _service(request).assign(campaign_id, bearer(request))
        return Response(out, status_code=201 if out.assignment is not None else 200)

    @post(
        "/assignments/{assignment_id:int}/judgment",
        operation_id="postJudgment",
        summary="Answer an assignment",
        guards=[rater_guard],
        request_max_body_size=JUDGMENT_MAX_BODY_BYTES,
        responses={
            200: ResponseSpec(
                schemas.JudgmentOut,
                description="the same answer again: one label, duplicate true",
                generate_examples=False,
            ),
            **error_responses(400, 401, 404, 409, 410, 413, 415, 503),
        },
    )
    async def judgment(
        self, assignment_id: int, data: schemas.JudgmentIn, request: Request
    ) -> Response[schemas.JudgmentOut]:
        """201 on the first answer, 200 with `duplicate: true` for the same answer again; a
        different answer is 409, an expired lease 410."""
        body = await strict_body(request, schemas.JudgmentIn)
        out = await _service(request).judge(assignment_id, bearer(request), body)
        return Response(out, status_code=200 if out.duplicate else 201)

    @post(
        "/assignments/{assignment_id:int}/report",
        operation_id="reportClip",
        summary="Report a clip of this task as unsafe or broken",
        guards=[rater_guard],
        request_max_body_size=JUDGMENT_MAX_BODY_BYTES,
        responses={
            200: ResponseSpec(
                schemas.ReportOut,
                description="this rater had reported the clip already: nothing written",
                generate_examples=False,
            ),
            **error_responses(400, 401, 403, 404, 413, 415, 503),
        },
    )
    async def report(
        self, assignment_id: int, data: schemas.ReportIn, request: Request
    ) -> Response[schemas.ReportOut]:
        """201 when stored: the campaign's policy withholds the clip once enough raters
        reported it (`withheld`), and the reporter's task is withdrawn either way; 200 with
        `duplicate: true` when this rater had reported it already. A clip the task does not
        show is a 400; a deactivated rater's report a 403."""
        body = await strict_body(request, schemas.ReportIn)
        out = await _service(request).report(assignment_id, bearer(request), body)
        return Response(out, status_code=200 if out.duplicate else 201)


def _service(request: Request) -> Service:
    """The app's `Service` (what the `service` dependency provides)."""
    return request.app.state.service
