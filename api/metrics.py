"""What a monitoring system reads at `GET /metrics` (Prometheus text format), and the access log.

One `Metrics` per app, each with its own registry (several apps in one process, as in the
tests, never share or clash). Counters and histograms are updated where things happen:
requests by the middleware, judgments by the service, engine calls and replays by the campaign
runtimes, database errors by a SQLAlchemy error hook; gauges that describe the present (queue
depth, open assignments, loaded campaigns) are read from the service at scrape time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from litestar.exceptions import HTTPException
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, event

if TYPE_CHECKING:
    from api.service import Service

access_log = logging.getLogger("ratingparty.access")
UNMATCHED = "unmatched"  # requests no route took (their paths would be unbounded labels)
# request latencies: from a cached read (below the first bucket) to an assignment waiting for
# the engine
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
ENGINE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
REPLAY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics:
    """The service's metrics in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "ratingparty_http_requests",
            "HTTP requests by method, route template and status",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "ratingparty_http_request_seconds",
            "HTTP request latency by method and route template",
            ("method", "route"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.judgments = Counter(
            "ratingparty_judgments",
            "answers recorded: label (a choice or level), skip, duplicate (the same answer again)",
            ("answer",),
            registry=self.registry,
        )
        self.engine_calls = Histogram(
            "ratingparty_engine_call_seconds",
            "engine calls by name, from sent to answered (calls run in order, so this "
            "includes waiting behind the call before)",
            ("call",),
            buckets=ENGINE_BUCKETS,
            registry=self.registry,
        )
        self.engine_per_task = Histogram(
            "ratingparty_engine_seconds_per_task",
            "engine time of a choice of tasks divided by the tasks it chose",
            buckets=ENGINE_BUCKETS,
            registry=self.registry,
        )
        self.replays = Histogram(
            "ratingparty_replay_seconds",
            "time to load a campaign: read its log and replay it into a fresh engine",
            buckets=REPLAY_BUCKETS,
            registry=self.registry,
        )
        self.replayed_labels = Counter(
            "ratingparty_replayed_labels",
            "labels replayed while loading campaigns, by where the replay started: "
            "snapshot (only the log after it) or log (the whole log)",
            ("start",),
            registry=self.registry,
        )
        self.snapshots = Counter(
            "ratingparty_snapshots",
            "snapshots: written, loaded, refused (another format or engine settings, or it did "
            "not load: the whole log is replayed instead)",
            ("event",),
            registry=self.registry,
        )
        self.prior_refits = Counter(
            "ratingparty_prior_refits",
            "background prior refits (api/refits.py): adopted, or failed (skipped)",
            ("event",),
            registry=self.registry,
        )
        self.prior_refit_seconds = Histogram(
            "ratingparty_prior_refit_seconds",
            "a background prior refit's fit, from its start to its refitted state returned",
            buckets=REPLAY_BUCKETS,
            registry=self.registry,
        )
        self.database_errors = Counter(
            "ratingparty_database_errors",
            "errors the database driver raised, by exception type",
            ("kind",),
            registry=self.registry,
        )

    def watch(self, service: Callable[[], Service | None]) -> None:
        """Read the present state of the service `service()` returns (queues, open
        assignments) at every scrape; nothing while it returns None (before the start)."""
        self.registry.register(_ServiceCollector(service))

    def watch_database(self, engine: Engine) -> None:
        """Count every error the database driver raises through `engine`."""

        def counted(context: Any) -> None:
            error = context.original_exception
            self.database_errors.labels(type(error).__name__).inc()

        event.listen(engine, "handle_error", counted)

    def engine_call(self, name: str, seconds: float, result: Any) -> None:
        """Record one engine call (`choose` also per task chosen)."""
        self.engine_calls.labels(name).observe(seconds)
        if name == "choose" and isinstance(result, list) and result:
            self.engine_per_task.observe(seconds / len(result))

    def judgment(self, choice: str | None, duplicate: bool) -> None:
        """Record one acknowledged answer."""
        answer = "duplicate" if duplicate else "skip" if choice == "skip" else "label"
        self.judgments.labels(answer).inc()

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


class _ServiceCollector(Collector):
    """Gauges read from the service when scraped."""

    def __init__(self, service: Callable[[], Service | None]) -> None:
        self.service = service

    def collect(self) -> Iterator[GaugeMetricFamily]:
        service = self.service()
        if service is None:
            return
        loaded = GaugeMetricFamily(
            "ratingparty_campaigns_loaded", "campaigns whose engine runs in this process"
        )
        loaded.add_metric([], service.loaded)
        yield loaded
        depth = GaugeMetricFamily(
            "ratingparty_queue_depth", "tasks chosen ahead, per campaign", labels=["campaign"]
        )
        held = GaugeMetricFamily(
            "ratingparty_open_assignments",
            "assignments handed out and not answered, per campaign",
            labels=["campaign"],
        )
        for campaign_id, (queued, open_) in service.queue_state().items():
            depth.add_metric([str(campaign_id)], queued)
            held.add_metric([str(campaign_id)], open_)
        yield depth
        yield held


def observe_requests(metrics: Metrics, *, log_access: bool) -> Callable[[ASGIApp], ASGIApp]:
    """Litestar middleware: count and time each request by its route template, and (with
    `log_access`) write one access-log line per request, its query string left out (a
    rating page's address carries the rater's token there)."""

    def middleware(app: ASGIApp) -> ASGIApp:
        async def observed(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            started = time.perf_counter()
            status = 500

            async def sending(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await app(scope, receive, sending)
            except HTTPException as error:
                status = error.status_code
                raise
            finally:
                took = time.perf_counter() - started
                route = scope.get("path_template") or UNMATCHED
                method = scope["method"]
                metrics.requests.labels(method, route, str(status)).inc()
                metrics.latency.labels(method, route).observe(took)
                if log_access:
                    query = "?[redacted]" if scope.get("query_string") else ""
                    client = scope.get("client")
                    access_log.info(
                        "%s %s%s %s",
                        method,
                        scope["path"],
                        query,
                        status,
                        extra={
                            "method": method,
                            "path": scope["path"] + query,
                            "route": route,
                            "status": status,
                            "ms": round(took * 1000, 3),
                            "client": client[0] if client else None,
                        },
                    )

        return observed

    return middleware


__all__ = ["Metrics", "observe_requests"]
