"""The rating page and the campaign dashboard: two HTML pages, their static assets, demo media.

The pages are static files with the campaign id written in; everything they show comes from
the JSON API (`/v1/...`), called by their own scripts with the credential the page was opened
with (`?token=` for a rater, `?key=` for the admin). Every script, style sheet and chart is
served from here: the Content-Security-Policy lets the pages load code and data only from this
service (clip media may live elsewhere, as a campaign's clip URIs say).
"""

from __future__ import annotations

from pathlib import Path

from litestar import Controller, MediaType, Response, get
from litestar.datastructures import CacheControlHeader
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler

from api.settings import data_dir

STATIC_DIR = Path(__file__).parent / "static"
MEDIA_DIR_NAME = "media"
CAMPAIGN_PLACEHOLDER = "{{campaign_id}}"
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        # clips are shown from wherever their URIs point; data: is the empty favicon
        "img-src 'self' data: blob: http: https:",
        "media-src 'self' blob: http: https:",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'none'",
    )
)
# revalidate on every load: a page never runs a stale script against a newer API
REVALIDATE = CacheControlHeader(no_cache=True)


def _page(name: str, campaign_id: int) -> Response[str]:
    """The HTML file `name` from the static folder with the campaign id written in."""
    html = (STATIC_DIR / name).read_text(encoding="utf-8")
    return Response(
        html.replace(CAMPAIGN_PLACEHOLDER, str(campaign_id)),
        media_type=MediaType.HTML,
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
        },
    )


class PagesController(Controller):
    """`GET /rate/{id}` (rater link: `?token=`) and `GET /dashboard/{id}` (admin: `?key=`)."""

    path = "/"
    tags = ("pages",)
    include_in_schema = False

    @get("/rate/{campaign_id:int}", operation_id="ratePage", sync_to_thread=False)
    def rate_page(self, campaign_id: int) -> Response[str]:
        """The rating page: two clips side by side (or one with an emoji scale)."""
        return _page("rate.html", campaign_id)

    @get("/dashboard/{campaign_id:int}", operation_id="dashboardPage", sync_to_thread=False)
    def dashboard_page(self, campaign_id: int) -> Response[str]:
        """The dashboard: leaderboard, weights, raters and progress, refreshed every few seconds."""
        return _page("dashboard.html", campaign_id)


def media_dir(database_url: str) -> Path:
    """The folder served under `/media/`: `media/` in the service's data folder."""
    return data_dir(database_url) / MEDIA_DIR_NAME


def page_routes(media_dir: str | Path | None = None) -> list[ControllerRouterHandler]:
    """The route handlers for the pages, `/static/...` and, given a folder, `/media/...`.

    Args:
        media_dir: a folder of clip media to serve under `/media/` (the demo's pictures);
            None serves none.

    Returns:
        Handlers to pass to `Litestar(route_handlers=[...])`.
    """
    routes: list[ControllerRouterHandler] = [
        PagesController,
        create_static_files_router(
            path="/static", directories=[STATIC_DIR], name="static", cache_control=REVALIDATE
        ),
    ]
    if media_dir is not None:
        folder = Path(media_dir)
        folder.mkdir(parents=True, exist_ok=True)
        routes.append(create_static_files_router(path="/media", directories=[folder], name="media"))
    return routes
