"""Liveness, readiness and metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Controller, MediaType, Response, get
from litestar.datastructures import State
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.errors import GatewayError, NotReady


class HealthController(Controller):
    tags = ["operations"]
    include_in_schema = True

    @get("/healthz", operation_id="healthz", sync_to_thread=False)
    def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz", operation_id="readyz")
    async def readyz(self, state: State) -> Response[dict[str, Any]]:
        checks = {
            "postgres": state.db.ping(),
            "redis": state.quota.ping(),
            "s3": state.store.ping(),
        }
        timeout = state.settings.db_timeout + 1
        results: dict[str, str] = {}

        async def run(name: str, coro: Any) -> None:
            try:
                await asyncio.wait_for(coro, timeout=timeout)
                results[name] = "ok"
            except (GatewayError, OSError, TimeoutError) as exc:
                results[name] = f"unavailable: {type(exc).__name__}"

        await asyncio.gather(*(run(n, c) for n, c in checks.items()))
        if not all(v == "ok" for v in results.values()):
            raise NotReady(results, retry_after=state.settings.retry_after)
        return Response({"status": "ok", "checks": results}, status_code=200)

    @get("/metrics", operation_id="metrics", media_type=MediaType.TEXT, sync_to_thread=False)
    def metrics(self, state: State) -> Response[bytes]:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
