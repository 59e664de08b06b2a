"""`create_app(settings) -> Litestar`: the ratingparty HTTP service.

The lifespan opens the database (creating missing tables), starts its one writer thread and
the service that loads campaigns on first use, and closes them in reverse order on exit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from anyio import to_thread
from litestar import Litestar, MediaType, Request, Response
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from api.controllers import CONTROLLERS
from api.db import create_tables, make_engine
from api.pages import media_dir, page_routes
from api.service import Service
from api.settings import Settings
from api.writer import Writer


def _service(state: State) -> Service:
    return state.service


def _validation_error(request: Request, error: ValidationException) -> Response[dict[str, Any]]:
    """400 whose detail names each problem (Litestar's default says only "Validation failed")."""
    problems = error.extra if isinstance(error.extra, list) else []
    messages = [
        f"{p.get('message')} ({p.get('source', 'body')}{': ' + p['key'] if p.get('key') else ''})"
        if isinstance(p, dict)
        else str(p)
        for p in problems
    ]
    detail = error.detail if not messages else f"{error.detail}: {'; '.join(messages)}"
    body: dict[str, Any] = {"status_code": 400, "detail": detail}
    if problems:
        body["extra"] = problems
    return Response(body, status_code=400, media_type=MediaType.JSON)


def create_app(settings: Settings | None = None) -> Litestar:
    """The Litestar app over `settings` (default: `Settings.from_env()`)."""
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        await to_thread.run_sync(create_tables, engine)
        writer = Writer(engine)
        service = Service(settings, engine, writer)
        await service.start()
        app.state.service = service
        try:
            if settings.demo:
                from api.demo import seed_demo  # the demo's synthetic data comes from sim/

                app.state.demo_campaign_id = await seed_demo(service)
            yield
        finally:
            await service.close()
            await writer.aclose()
            engine.dispose()

    return Litestar(
        route_handlers=[*CONTROLLERS, *page_routes(media_dir(settings.database_url))],
        lifespan=[lifespan],
        state=State({"settings": settings}),
        dependencies={"service": Provide(_service, sync_to_thread=False)},
        exception_handlers={ValidationException: _validation_error},
        request_max_body_size=settings.max_body_bytes,
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


__all__ = ["create_app"]
