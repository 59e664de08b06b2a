"""The calls a campaign's runtime sends to its engine host: `EngineCalls`.

Only the pump and the calls it runs send them (api/pump.py), in the order sent; each is timed in
the service's metrics. When the engine's process stopped, the runtime stops too (`on_stopped`):
what waits gets a 503, and the service rebuilds the campaign from the database on the next
request.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from api.engine_host import EngineStopped
from api.errors import Unavailable
from api.metrics import Metrics


class EngineCalls:
    """One campaign's engine host (api/engine_host.py) and the calls sent to it.

    Args:
        host: the engine host (`make_host`), started and closed by the runtime.
        metrics: where each call is timed.
        on_stopped: called once the host's engine stopped; returns the error the call raises.
    """

    def __init__(self, host: Any, metrics: Metrics, on_stopped: Callable[[], Unavailable]) -> None:
        self.host = host
        self._metrics = metrics
        self._on_stopped = on_stopped

    async def run(self, name: str, *args: Any) -> Any:
        """Call the engine (only the pump and its calls do this)."""
        return await self.submit(name, *args)

    def submit(self, name: str, *args: Any) -> Awaitable[Any]:
        """Send an engine call now (calls run in the order sent); await the result."""
        return self._result(name, time.perf_counter(), self.host.submit(name, *args))

    async def _result(self, name: str, sent_at: float, sent: Awaitable[Any]) -> Any:
        try:
            result = await sent
            self._metrics.engine_call(name, time.perf_counter() - sent_at, result)
            return result
        except EngineStopped:
            raise self._on_stopped() from None
