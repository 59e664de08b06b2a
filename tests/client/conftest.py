"""Client test fixtures: the real app served by uvicorn on a free port (SQLite in tmp_path)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import ADMIN_KEY, LiveServer, make_settings, serve

__all__ = ["ADMIN_KEY", "Flaky"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The app these tests serve warns about Litestar 3.0's handler style (we pin < 3)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(
                pytest.mark.filterwarnings("ignore::litestar.exceptions.LitestarDeprecationWarning")
            )
            item.add_marker(pytest.mark.filterwarnings("ignore:Deprecated 'query' parameter"))


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    """The service over a fresh SQLite file, listening until the test ends."""
    with serve(make_settings(f"sqlite:///{tmp_path / 'ratingparty.db'}")) as server:
        yield server


class Flaky(httpx.BaseTransport):
    """A real HTTP transport that fails the first `times` requests whose path ends with
    `suffix` (and `method`), the way a network or a restarting service does:

    - "refused": the connection never opens (the request is not sent);
    - "lost": the request reaches the service, which answers, but the answer is lost;
    - "unavailable": the service answers 503.

    Attributes:
        sent: requests that reached the service, per path.
    """

    def __init__(self, suffix: str, mode: str, *, times: int = 1, method: str = "POST") -> None:
        self.inner = httpx.HTTPTransport()
        self.suffix, self.mode, self.left, self.method = suffix, mode, times, method
        self.sent: dict[str, int] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        hit = path.endswith(self.suffix) and request.method == self.method and self.left > 0
        if hit:
            self.left -= 1
            if self.mode == "refused":
                raise httpx.ConnectError("connection refused", request=request)
            if self.mode == "unavailable":
                body = {"status_code": 503, "detail": "the campaign's engine is restarting"}
                return httpx.Response(503, json=body, headers={"retry-after": "0"})
        self.sent[path] = self.sent.get(path, 0) + 1
        response = self.inner.handle_request(request)
        if hit and self.mode == "lost":
            response.read()
            response.close()
            raise httpx.ReadError("connection reset by peer", request=request)
        return response

    def close(self) -> None:
        self.inner.close()
