"""A webhook receiver on 127.0.0.1 (allowed as a target only in development): it records every
request and answers by path, so tests see signatures, retries and refusals as a user's would."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Paths: `/flaky` answers 503 to a message's first attempt and 204 after; `/down` always
    500; `/redirect` 302 to `/ok`; anything else 204."""

    server: ThreadingHTTPServer
    received: list[Received] = field(default_factory=list)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def wait_for(self, path: str, count: int, timeout: float = 60) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [r for r in self.received if r.path == path]
            if len(found) >= count:
                return found
            time.sleep(0.1)
        raise AssertionError(
            f"{path}: {len([r for r in self.received if r.path == path])} of {count} requests"
        )

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_receiver() -> Receiver:
    receiver: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            seen = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            earlier = [
                r for r in receiver.received if r.headers.get("webhook-id") == seen.headers.get("webhook-id")
            ]
            receiver.received.append(seen)
            status = {"/down": 500, "/redirect": 302}.get(self.path, 204)
            if self.path == "/flaky" and not earlier:
                status = 503
            self.send_response(status)
            if status == 302:
                self.send_header("Location", "/ok")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver = Receiver(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return receiver
