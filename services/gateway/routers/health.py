"""Liveness and readiness."""

from __future__ import annotations

import logging

from fastapi import APIRouter

from services.gateway.deps import ServicesDep
from services.gateway.problems import Problem

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(services: ServicesDep) -> dict[str, str]:
    """Redis and object storage are reachable. Unauthenticated, so it says which is down and
    nothing more: the exception's text (endpoint, host, port, bucket) goes to the log only."""
    checks: dict[str, str] = {}
    down: list[str] = []
    for name, what, ping in (
        ("redis", "job store", services.jobs.ping),
        ("storage", "object storage", services.store.ping),
    ):
        try:
            ping()
            checks[name] = "ok"
        except Exception as exc:  # any failure means: not ready
            log.warning("readiness: %s unavailable: %s: %s", what, type(exc).__name__, exc)
            checks[name] = "unavailable"
            down.append(f"{what} unavailable")
    if down:
        raise Problem(503, "not-ready", "A dependency is unreachable.", "; ".join(down), checks=checks)
    return {"status": "ready", **checks}
