"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter

from services.gateway.deps import ServicesDep
from services.gateway.problems import Problem

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(services: ServicesDep) -> dict[str, str]:
    """Redis and object storage are reachable."""
    checks: dict[str, str] = {}
    for name, ping in (("redis", services.jobs.ping), ("storage", services.store.ping)):
        try:
            ping()
            checks[name] = "ok"
        except Exception as exc:  # any failure means: not ready
            checks[name] = f"{type(exc).__name__}: {str(exc)[:200]}"
    if any(v != "ok" for v in checks.values()):
        raise Problem(503, "not-ready", "A dependency is unreachable.", checks=checks)
    return {"status": "ready", **checks}
