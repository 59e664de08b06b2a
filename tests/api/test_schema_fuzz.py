"""Schemathesis against the real server: requests made from the OpenAPI document, valid and
invalid, as the admin and as a rater, must never give a server error and every answer must
match the document (status code, content type, body schema)."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.conftest import ADMIN, LiveServer, clip_batch

EXAMPLES = 150  # per identity and generation mode: bounded, about 15 s a backend
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.mark.slow
def test_generated_requests_give_no_server_error_and_match_the_schema(
    live_server: LiveServer,
) -> None:
    base = live_server.url
    with httpx.Client(base_url=base, headers=ADMIN, timeout=30) as client:
        body = {"name": "fuzz", "criteria": ["a", "b"], "emoji_levels": 3}
        cid = client.post("/v1/campaigns", json=body).json()["id"]
        added = client.post(f"/v1/campaigns/{cid}/clips", json={"clips": clip_batch(6, groups=1)})
        assert added.status_code == 201, added.text
        token = client.post(f"/v1/campaigns/{cid}/raters", json={"name": "r"}).json()["token"]
        rater = {"Authorization": f"Bearer {token}"}
        held = client.post(f"/v1/campaigns/{cid}/assignments", headers=rater)
        assert held.status_code == 201, held.text
    schema = schemathesis.openapi.from_url(f"{base}/schema/openapi.json")
    failures: list[str] = []

    for identity in (ADMIN, rater):
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failures += _fuzz(schema, base, identity, mode, cid)
    assert not failures, "\n\n".join(failures[:10])


def _fuzz(
    schema: schemathesis.BaseSchema,
    base: str,
    identity: dict[str, str],
    mode: GenerationMode,
    campaign_id: int,
) -> list[str]:
    """`EXAMPLES` generated requests as `identity`; what the checks found wrong."""
    failures: list[str] = []
    # half the cases name the campaign that exists, so reads and writes reach it
    cases = st.one_of(
        schema.as_strategy(mode, path_parameters={"campaign_id": campaign_id}),
        schema.as_strategy(mode),
    )

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases)
    def run(case: schemathesis.Case) -> None:
        headers = {**(case.headers or {}), **identity}
        response = case.call(base_url=base, headers=headers, timeout=30)
        try:
            case.validate_response(response, checks=CHECKS)
        except (AssertionError, BaseExceptionGroup) as error:  # every kind, in one run
            failures.append(f"{mode} {case.method} {case.formatted_path}: {error}"[:800])

    run()
    return failures
