"""Request body limit, counted while the body streams in: a client cannot get past it by leaving
out or understating Content-Length."""

from __future__ import annotations

import json
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.problems import MEDIA_TYPE, Problem

MULTIPART_OVERHEAD_BYTES = 1024 * 1024  # a multipart upload's form fields and boundaries


class BodyTooLarge(Exception):
    pass


IMAGES_FIX = "Split the images over several jobs, or put them in the bucket and submit a prefix."


@dataclass(frozen=True)
class PathLimit:
    """A path's own body limit, and what a caller over it can do."""

    max_bytes: int
    fix: str


class BodySizeLimit:
    """Pure ASGI middleware: 413 as soon as more than `max_bytes` arrive (or are announced)."""

    def __init__(self, app: ASGIApp, max_bytes: int, per_path: dict[str, PathLimit] | None = None) -> None:
        self.app = app
        self.default = PathLimit(max_bytes, IMAGES_FIX)
        self.per_path = per_path or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope.get("path", "").rstrip("/"), self.default)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit.max_bytes:
            await self._refuse(scope, send, limit)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(scope, send, limit)

    async def _refuse(self, scope: Scope, send: Send, limit: PathLimit) -> None:
        problem = Problem(
            413,
            "content-too-large",
            "The request body is too large.",
            f"Bodies are limited to {limit.max_bytes:,} bytes.",
            limit.fix,
        )
        body = json.dumps(problem.details(scope.get("path", "")).body()).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", MEDIA_TYPE.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
