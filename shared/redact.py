"""Text for callers, without what they must not learn: file-system paths (a worker's temp and
cache folders), URLs and host names with ports, and IP addresses. Messages that the suite's
workers write for a tenant pass through it; logs keep the whole text for the operator."""

from __future__ import annotations

import ipaddress
import re

_PATTERNS = (
    # scheme://anything up to white space or a quote: endpoints, presigned links, file:// URIs
    (re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"()<>,]+"), "<url>"),
    # urllib3/requests: HTTPConnectionPool(host='minio', port=9000)
    (re.compile(r"\bHTTPS?ConnectionPool\([^)]*\)"), "<connection>"),
    (re.compile(r"\bhost=['\"]?[^\s'\",)]+['\"]?"), "host=<host>"),
    # absolute paths of two or more parts (/tmp/x, /root/.cache/torch/hub), and ~/ paths
    # (the API's own routes, /v1/... and /ui/..., are what a caller needs and stay)
    (re.compile(r"(?<![\w.:/])(?!/v1/|/ui/)(?:~|/[\w.@+-]+)(?:/[\w.@+-]+)+/?"), "<path>"),
    # IPv4 and IPv6 addresses, with or without a port
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b"), "<address>"),
    # host:port
    (re.compile(r"\b[a-zA-Z][\w.-]*:\d{2,5}\b"), "<host>"),
)


_IPV6_CANDIDATE = re.compile(r"(?<![\w:])\[?[0-9a-fA-F:.]*:[0-9a-fA-F:.]*:[0-9a-fA-F:.%\w]*\]?(?::\d+)?")


def _ipv6(match: re.Match[str]) -> str:
    candidate = match.group(0).strip("[]").split("]")[0].split("%")[0]
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return match.group(0)
    return "<address>"


def redact(text: str) -> str:
    text = _IPV6_CANDIDATE.sub(_ipv6, text)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
