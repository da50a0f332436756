"""The worker's web views: the user view (routed to the key's owner), metrics and health."""

from __future__ import annotations

from typing import Any

import faust
from prometheus_client import CollectorRegistry, generate_latest

from agents.user_agent import UserAgent


def readiness(app: faust.App) -> dict[str, bool]:
    """The readiness checks, by name: all true when the worker is consuming."""
    recovery = app.tables.recovery  # type: ignore[attr-defined]  # TableManager, not its protocol
    return {
        "partitions_assigned": bool(app.consumer.assignment()),
        "not_rebalancing": not app.rebalancing,
        "tables_recovered": not recovery.in_recovery and recovery.completed.is_set(),
    }


def is_ready(app: faust.App) -> bool:
    return all(readiness(app).values())


def register_views(app: faust.App, users: UserAgent, registry: CollectorRegistry) -> None:
    metrics = users.metrics
    @app.page("/users/{user_id}")
    @app.table_route(table=users.users, match_info="user_id")
    async def user_view(web: Any, request: Any, user_id: str) -> Any:
        state = users.load(user_id)
        if state is None:
            return web.json({"error": "unknown user", "user_id": user_id}, status=404)
        return web.json(state.view())

    @app.page("/metrics")
    async def metrics_view(web: Any, request: Any) -> Any:
        # Prometheus's text format 0.0.4; aiohttp adds the charset itself and refuses it here.
        return web.bytes(generate_latest(registry), content_type="text/plain; version=0.0.4")

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        # The event loop answers; but a Faust app that crashed (e.g. a failed table recovery)
        # can keep its web server up while consuming nothing: that is not alive.
        if app.crashed:
            return web.json({"status": "crashed", "reason": repr(app.crash_reason)},
                            status=503)
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        checks = readiness(app)
        ready = all(checks.values())
        metrics.ready.set(1 if ready else 0)  # the gauge follows every probe, not only the timer
        return web.json({"ready": ready, **checks}, status=200 if ready else 503)
