"""One JSON log line per request, with its tenant and job (`shared.observability.logs`): the job
from the path, or, for a new job, from the answer's Location. Pure ASGI, so the routes run in this request's
log context and every line they log carries the same fields."""

from __future__ import annotations

import logging
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.observability import logs

log = logging.getLogger("services.gateway.requests")
JOB_IN_PATH = re.compile(r"/jobs/([0-9a-f]{32})")
QUIET = ("/healthz", "/readyz", "/metrics")  # probes and scrapes: debug level only


def job_in(path: str) -> str | None:
    found = JOB_IN_PATH.search(path)
    return found.group(1) if found else None


class RequestLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        token = logs.new_context(job_id=job_in(path))
        started, status = time.monotonic(), 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", []):
                    if name.lower() == b"location":
                        logs.bind(job_id=job_in(value.decode("latin-1")))
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            took = round((time.monotonic() - started) * 1000, 1)
            level = logging.DEBUG if path in QUIET else logging.INFO
            extra = {"method": scope["method"], "path": path, "status": status, "duration_ms": took}
            log.log(level, "%s %s %d", scope["method"], path, status, extra=extra)
            logs.reset_context(token)
