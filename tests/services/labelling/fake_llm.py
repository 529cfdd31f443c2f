"""A small OpenAI-compatible chat-completions server for tests, on 127.0.0.1 in a thread.

It answers `/v1/chat/completions` with structured JSON derived from the prompt, reports usage,
and plays scripted faults one per request: `("429", retry_after)`, `("500",)`, `("slow",)`
(answers after `slow_seconds`, past the client's timeout), `("malformed",)` (not JSON),
`("invalid",)` (JSON that breaks the schema), `("401",)`. It counts what it was sent. `stop` and
`restart` take it down and up again on the same port (an outage)."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Seen:
    body: dict[str, Any]
    headers: dict[str, str]
    fault: str | None
    usage: tuple[int, int] | None  # (prompt, completion) tokens reported, None without answer
    at: float = field(default_factory=time.monotonic)


def answer_for(body: dict[str, Any]) -> dict[str, Any]:
    """A deterministic, valid answer: level 1 names the first caption; a parent names its
    first child; each difference names its child's number."""
    user = body["messages"][1]["content"]  # the task; later user turns only ask again
    if "sub-clusters" in user:
        children = re.findall(r"^(\d+)\. (.*) \(\d+ images\)$", user, flags=re.M)
        return {
            "label": f"kinds of {children[0][1]}",
            "differences": [{"child": int(n), "difference": f"detail {n}"} for n, _ in children],
        }
    first = re.search(r"^- (.*?)( \[\d+\])?$", user, flags=re.M)
    assert first, user
    return {"label": f"scenes like {first.group(1)}"}


class FakeLLM:
    def __init__(self) -> None:
        self.script: deque[tuple[str, ...]] = deque()
        self.seen: list[Seen] = []
        self.slow_seconds = 1.0
        self.delay = 0.0  # every answer waits this long (to observe concurrency)
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._listen(0)

    def _listen(self, port: int) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.port = int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeLLM:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening: connections are refused, as by an endpoint that is down."""
        self._server.shutdown()
        self._server.server_close()

    def restart(self) -> None:
        """Listen again on the same port, after `stop`."""
        self._listen(self.port)
        self.start()

    @property
    def requests(self) -> int:
        return len(self.seen)

    def tokens(self) -> tuple[int, int]:
        """(prompt, completion) tokens over every answer the server gave."""
        usages = [s.usage for s in self.seen if s.usage]
        return sum(u[0] for u in usages), sum(u[1] for u in usages)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake._lock:
                    fault = fake.script.popleft() if fake.script else None
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    self._answer(body, fault)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up first (timeouts)
                finally:
                    with fake._lock:
                        fake.in_flight -= 1

            def _answer(self, body: dict[str, Any], fault: tuple[str, ...] | None) -> None:
                kind = fault[0] if fault else None
                seen = Seen(body, {k.lower(): v for k, v in self.headers.items()}, kind, None)
                with fake._lock:
                    fake.seen.append(seen)
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": "no such route"}})
                if kind == "429":
                    return self._send(429, {"error": {"message": "slow down"}}, {"Retry-After": fault[1]})
                if kind in ("500", "401"):
                    return self._send(int(kind), {"error": {"message": f"fault {kind}"}})
                time.sleep(fake.slow_seconds if kind == "slow" else fake.delay)
                if kind == "malformed":
                    content = '{"label": "unterminated'
                elif kind == "invalid":
                    content = json.dumps({"labels": ["wrong key"]})
                else:
                    content = json.dumps(answer_for(body))
                usage = (len(json.dumps(body["messages"])) // 4, len(content) // 4 + 1)
                seen.usage = usage
                self._send(
                    200,
                    {
                        "id": f"chatcmpl-{len(fake.seen)}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": content},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {
                            "prompt_tokens": usage[0],
                            "completion_tokens": usage[1],
                            "total_tokens": sum(usage),
                        },
                    },
                )

            def _send(
                self, status: int, document: dict[str, Any], headers: dict[str, str] | None = None
            ) -> None:
                data = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler
