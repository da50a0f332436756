"""The worker's web views: the user view (routed to the key's owner), metrics and health."""

from __future__ import annotations

from typing import Any

import faust
from prometheus_client import CollectorRegistry, generate_latest

from agents.user_agent import UserAgent


def readiness(app: faust.App) -> dict[str, bool]:
    """The readiness checks of *this* worker, by name: all true when it serves its own
    partitions. A rebalance elsewhere in the group does not make it unready; its own table
    recovery does. A worker that owns no partition (more workers than partitions) is ready:
    it waits for one, and says so in the ``limitstream_no_partitions`` gauge."""
    recovery = app.tables.recovery  # type: ignore[attr-defined]  # TableManager, not its protocol
    return {
        "not_crashed": not app.crashed,
        "tables_recovered": not recovery.in_recovery and recovery.completed.is_set(),
    }


def is_ready(app: faust.App) -> bool:
    return all(readiness(app).values())


def input_partitions(app: faust.App, users: UserAgent) -> int:
    """Input partitions this worker owns (0 before its first assignment, or with none)."""
    return sum(1 for tp in app.consumer.assignment() if tp.topic in users.logical)


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
        # can keep its web server up while consuming nothing, and an agent that retries the
        # same records (a broker that refuses them) answers too: neither is alive.
        if app.crashed:
            return web.json({"status": "crashed", "reason": repr(app.crash_reason)},
                            status=503)
        stalled = users.stalled_s()
        if stalled > users.settings.stall_timeout_s:
            return web.json({"status": "stalled", "stalled_s": round(stalled, 1),
                             "records_waiting": users.applying + len(users.held.merge)},
                            status=503)
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        checks = readiness(app)
        ready = all(checks.values())
        partitions = input_partitions(app, users)
        # The gauges follow every probe, not only the timer.
        metrics.ready.set(1 if ready else 0)
        metrics.no_partitions.set(1 if ready and not partitions else 0)
        return web.json({"ready": ready, "input_partitions": partitions, **checks},
                        status=200 if ready else 503)
