"""Headers that tell a browser what the gateway's pages may do.

Every answer: no MIME sniffing (`nosniff`), never framed (`X-Frame-Options: DENY`, against
clickjacking), no `Referer` sent on (the explorer's URLs hold job ids). The explorer (`/ui`, its
assets and `/ui/api`) also gets a Content-Security-Policy that allows only its own script, style
and data, so an injected script could neither run nor send the API key it keeps in
`sessionStorage` elsewhere (`connect-src 'self'`). Thumbnails are shown from `blob:` URLs.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

EXPLORER_CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
COMMON = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def headers_for(path: str) -> dict[str, str]:
    if path == "/ui" or path.startswith("/ui/"):
        return {**COMMON, "Content-Security-Policy": EXPLORER_CSP}
    return COMMON


class SecurityHeaders:
    """Pure ASGI middleware: adds the headers to every HTTP answer (errors included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = headers_for(scope.get("path", ""))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in extra.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
