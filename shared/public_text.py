"""Text from inside the suite (an exception's message) made fit for a caller to read: no file
paths, URLs, hosts or addresses of the machines it ran on, and cut at a word, not mid-word.

A worker's exception may name its temp folder, its model cache, `HTTPConnectionPool(host=...,
port=...)` or a bucket endpoint. The whole text stays in the worker's log; the job's error keeps
what says what went wrong.
"""

from __future__ import annotations

import re
from functools import partial

ELLIPSIS = "…"

_REDACTIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://\S+"), "<url>"),
    (re.compile(r"\bhost=(['\"]?)[^'\",)\s]+\1"), "host=<host>"),
    (re.compile(r"\bport=\d+"), "port=<port>"),
    (re.compile(r"\b[a-zA-Z]:\\\S+"), "<path>"),  # C:\...
    # /abs/path and ~/path, not "and/or" or "layer4/17" (a word character before the slash), not
    # "models:/name/1" (MLflow's names), and not the API's own routes (/v1/..., /ui/...)
    (re.compile(r"(?<![\w.~:])(?!/v1/|/ui/)~?/[\w.@+%=-]+(?:/[\w.@+%=-]*)*"), "<path>"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), "<address>"),
    (
        re.compile(
            r"\[?(?<![\w:])(?=[0-9a-fA-F:]*[0-9a-fA-F])(?:[0-9a-fA-F]{0,4}:){2,7}[0-9a-fA-F]{0,4}"
            r"(?:%\w+)?\]?(?::\d+)?"
        ),
        "<address>",
    ),
    (re.compile(r"\b[a-zA-Z][\w-]*(?:\.[\w-]+)*:\d{2,5}\b"), "<host>"),  # minio:9000, minio.internal:9000
)


def redact(text: str) -> str:
    """`text` without paths, URLs, hosts, ports and IP addresses."""
    for pattern, replacement in _REDACTIONS:
        if replacement in ("<url>", "<path>"):  # they end at a space: the sentence's punctuation stays
            text = pattern.sub(partial(_keep_trailing, replacement), text)
        else:
            text = pattern.sub(replacement, text)
    return text


def _keep_trailing(replacement: str, match: re.Match[str]) -> str:
    """Punctuation after a path or URL stays ("... at /x." -> "... at <path>.")."""
    found = match.group(0)
    stripped = found.rstrip(".,;:)'\"")
    return replacement + found[len(stripped) :]


def shorten(text: str, limit: int) -> str:
    """`text` as it is when it fits in `limit` characters; else cut at the last word boundary
    before the limit, with an ellipsis (so the result is at most `limit` characters)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - len(ELLIPSIS) + 1]
    space = cut.rfind(" ")
    # at a word boundary not too far back; else within the one long word
    cut = cut[:space] if space > limit // 2 else cut[: limit - len(ELLIPSIS)]
    return cut.rstrip(" ,;:.-") + ELLIPSIS


def public_text(text: str, limit: int = 500) -> str:
    """An internal message as a caller may see it: redacted, then shortened at a word."""
    return shorten(redact(text), limit)
