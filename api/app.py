"""`create_app(settings) -> Litestar`: the ratingparty HTTP service.

The lifespan locks an SQLite file against a second server (api/ownership.py), opens the
database (creating or upgrading its schema: api/migrations), starts its one writer thread and
the service that loads campaigns on first use, and closes them in reverse order on exit. With
several processes on one PostgreSQL database, a campaign's requests go to the process that
runs its engine (api/routing.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from anyio import to_thread
from litestar import Litestar, MediaType, Request, Response
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import ValidationException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.logging.config import LoggingConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import (
    Components,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Schema,
    SecurityScheme,
)

from api import schemas
from api.controllers import CONTROLLERS
from api.controllers._body import JsonRequest, readable
from api.db import make_engine, migrate
from api.demo import seed_demo
from api.export import MEDIA_TYPES
from api.metrics import Metrics, observe_requests
from api.ownership import hold_sqlite
from api.pages import media_dir, page_routes
from api.routing import route_to_owner
from api.service import Service
from api.settings import Settings
from api.writer import Writer


def _service(state: State) -> Service:
    return state.service


def _validation_error(request: Request, error: ValidationException) -> Response[dict[str, Any]]:
    """400 whose detail names each problem (Litestar's default says only "Validation failed")."""
    problems = error.extra if isinstance(error.extra, list) else []
    messages = [
        f"{readable(str(p.get('message')))} "
        f"({p.get('source', 'body')}{': ' + p['key'] if p.get('key') else ''})"
        if isinstance(p, dict)
        else str(p)
        for p in problems
    ]
    detail = error.detail if not messages else f"{error.detail}: {'; '.join(messages)}"
    body: dict[str, Any] = {"status_code": 400, "detail": detail}
    if problems:
        body["extra"] = [
            {**p, "message": readable(str(p.get("message")))} if isinstance(p, dict) else p
            for p in problems
        ]
    return Response(body, status_code=400, media_type=MediaType.JSON)


def _too_large(request: Request, error: RequestEntityTooLarge) -> Response[dict[str, Any]]:
    """413 that names the limit (Litestar says only "Request Entity Too Large"). The rest of
    the body is read and dropped by the server, within its body deadline, so a client still
    sending gets this answer instead of a reset connection."""
    del error
    limit = request.route_handler.resolve_request_max_body_size()
    detail = f"the request body is larger than this endpoint accepts ({limit} bytes at most)"
    return Response(
        {"status_code": 413, "detail": detail}, status_code=413, media_type=MediaType.JSON
    )


def _complete_openapi(app: Litestar) -> None:
    """Say in the OpenAPI document what Litestar's generation leaves out: request bodies
    refuse unknown fields (msgspec's `forbid_unknown_fields`), and the export is CSV or JSON
    lines, not JSON."""
    document = app.openapi_schema
    components = document.components.schemas or {}
    for struct in schemas.INPUTS:
        component = components.get(struct.__name__)
        if component is not None:
            component.additional_properties = False
    export = (document.paths or {}).get("/v1/campaigns/{campaign_id}/export")
    if export is not None and export.get is not None and export.get.responses:
        ok = export.get.responses.get("200")
        if isinstance(ok, OpenAPIResponse):
            ok.content = {
                media_type: OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING))
                for media_type in MEDIA_TYPES.values()
            }


def create_app(settings: Settings | None = None) -> Litestar:
    """The Litestar app over `settings` (default: `Settings.from_env()`)."""
    settings = settings or Settings.from_env()
    if settings.demo and settings.public_url is None:
        raise ValueError(
            "the demo seeds itself through this server's own URL: set RATINGPARTY_PUBLIC_URL "
            "(python -m api sets it from --host and --port)"
        )
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # one server per SQLite file: a second one stops here (DatabaseInUse)
        unlock = hold_sqlite(settings.database_url)
        try:
            async with _serving(app):
                yield
        finally:
            unlock()

    @asynccontextmanager
    async def _serving(app: Litestar) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        metrics.watch_database(engine)
        await to_thread.run_sync(migrate, engine)
        writer = Writer(engine)
        service = Service(settings, engine, writer, metrics)
        await service.start()
        app.state.service = service
        demo = None
        try:
            if settings.demo:
                # seeded through this server's API by a child process, once it listens
                demo = asyncio.create_task(
                    seed_demo(
                        str(settings.public_url),
                        settings.admin_key,
                        media_dir(settings.database_url),
                    )
                )
            app.state.demo = demo
            yield
        finally:
            if demo is not None and not demo.done():
                demo.cancel()
                await asyncio.gather(demo, return_exceptions=True)
            await service.close()
            await writer.aclose()
            engine.dispose()

    app = Litestar(
        route_handlers=[*CONTROLLERS, *page_routes(media_dir(settings.database_url))],
        lifespan=[lifespan],
        on_startup=[_complete_openapi],
        request_class=JsonRequest,
        state=State({"settings": settings, "metrics": metrics}),
        middleware=[
            observe_requests(metrics, log_access=settings.access_log),
            route_to_owner(settings.max_body_bytes, settings.max_bulk_bytes),
        ],
        dependencies={"service": Provide(_service, sync_to_thread=False)},
        exception_handlers={
            ValidationException: _validation_error,
            RequestEntityTooLarge: _too_large,
        },
        request_max_body_size=settings.max_body_bytes,
        # the process's logging (api/logs.py: JSON, redacted) stays as configured: Litestar's
        # records go to the root logger's handler instead of a handler of their own
        logging_config=LoggingConfig(
            configure_root_logger=False,
            disable_existing_loggers=False,
            loggers={"litestar": {"level": "INFO", "handlers": [], "propagate": True}},
        ),
        openapi_config=OpenAPIConfig(
            title="ratingparty",
            version="1",
            path="/schema",
            components=Components(
                security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")}
            ),
            security=[{"bearer": []}],
        ),
    )
    metrics.watch(lambda: app.state.get("service"))
    return app


__all__ = ["create_app"]
