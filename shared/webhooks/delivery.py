"""Webhooks: a job's callbacks are told when it ends, by the Standard Webhooks spec.

Who delivers: a Celery task (`webhooks.deliver`) on the labelling workers' queue, emitted by the
job store whenever a job reaches an end status. Job ends happen in workers (assemble, a failed
stage) and in the gateway (cancelling a queued job); a task catches all of them, survives a
restart of either side (Redis keeps the message), and backs off with `countdown` without holding
a gateway request or thread. The labelling workers carry it because they are the light workers
that already have egress to the internet (the LLM endpoint), so no new deployment is needed.

Every message has one `webhook-id` for all its attempts, a `webhook-timestamp`, and an HMAC
`webhook-signature` (the `standardwebhooks` library) under the tenant's own secret, derived from
`WEBHOOK_SIGNING_KEY`. Targets are guarded against SSRF: https only outside development; no
loopback, private, link-local, shared, reserved or metadata addresses, checked on the resolved
addresses when the job is submitted and again on the address actually connected to (the
connection goes to the checked address, so DNS rebinding cannot slip in between). Redirects are
never followed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import httpcore
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from standardwebhooks.webhooks import Webhook

from shared.settings import PLACEHOLDER_SECRETS, get_infra_settings

log = logging.getLogger(__name__)

Resolver = Callable[[str, int], list[str]]


class WebhookSettings(BaseSettings):
    """`WEBHOOK_` + name: the signing key, the back-off, and the bounds on retries."""

    model_config = SettingsConfigDict(env_prefix="WEBHOOK_", extra="ignore", frozen=True)

    signing_key: str = Field(
        "changeme",
        description="Master key; each tenant's secret is derived from it (HMAC-SHA256 of the tenant).",
    )
    retry_delays_s: tuple[float, ...] = Field(
        (5.0, 30.0, 120.0, 600.0, 1800.0),
        description="Back-off before each retry; their count bounds the attempts (1 + retries).",
    )
    max_age_s: float = Field(3600.0, gt=0, description="No retry starts later than this after the event.")
    timeout_s: float = Field(10.0, gt=0, description="Connect and read timeout of one attempt.")


def check_signing_key(environment: str, settings: WebhookSettings) -> None:
    """A placeholder key would let anyone who read the docs forge every tenant's webhooks."""
    if settings.signing_key in PLACEHOLDER_SECRETS and environment != "development":
        raise ValueError("WEBHOOK_SIGNING_KEY is a placeholder; set a real secret (openssl rand -hex 32)")


@lru_cache(maxsize=1)
def get_webhook_settings() -> WebhookSettings:
    """The settings, refused with a placeholder key outside development."""
    settings = WebhookSettings()
    check_signing_key(get_infra_settings().environment, settings)
    return settings


def development() -> bool:
    return get_infra_settings().environment == "development"


def tenant_secret(signing_key: str, tenant: str) -> str:
    """The tenant's `whsec_...` secret: derived, so nothing per tenant has to be stored."""
    digest = hmac.new(signing_key.encode(), f"webhook-secret:{tenant}".encode(), hashlib.sha256).digest()
    return "whsec_" + base64.b64encode(digest).decode()


# --- SSRF guard ----------------------------------------------------------------------------------


class UnsafeTarget(ValueError):
    """A callback URL that may not be called."""


# Cloud metadata services that sit on otherwise ordinary-looking addresses.
METADATA = frozenset(ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200"))

# IPv6 forms that carry an IPv4 address a packet may end up at: on a NAT64 network
# `64:ff9b::127.0.0.1` reaches the translator's loopback, on a 6to4 one `2002:7f00:1::` does too.
# Each is decided on its IPv4 address. The IPv4-mapped (`::ffff:a.b.c.d`) and Teredo forms are
# read through `ipaddress`; the others by their prefix, the IPv4 address in the last 32 bits.
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052, the well-known prefix
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # RFC 4291, deprecated (`::` and `::1` aside)
IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # RFC 2765 (SIIT)
# Global unicast IPv6 lies in 2000::/3; nothing outside it is a public host (site-local fec0::/10,
# unique local fc00::/7, link-local fe80::/10, multicast, the local-use NAT64 64:ff9b:1::/48 whose
# IPv4 position depends on the site's own prefix, ...).
GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (NAT64, 6to4, Teredo, IPv4-compatible, -mapped
    or -translated), each of which its packets may reach; empty for a plain IPv6 address."""
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip.teredo is not None:
        server, client = ip.teredo  # the client's address is stored inverted; ipaddress undoes it
        return [server, client]
    last32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in NAT64 or ip in IPV4_TRANSLATED:
        return [last32]
    if ip in IPV4_COMPATIBLE and int(ip) > 1:  # `::` is unspecified and `::1` loopback, as IPv6
        return [last32]
    return []


def _refusal(ip: Address, allow_loopback: bool) -> str | None:
    """Why `ip` may not be called (the kind of address), or None when it may."""
    if ip in METADATA:
        return "a cloud metadata address"
    if ip.is_loopback:
        return None if allow_loopback else "a loopback address (allowed only with ENVIRONMENT=development)"
    if isinstance(ip, ipaddress.IPv6Address) and (ip.is_site_local or ip not in GLOBAL_UNICAST):
        return "not a global unicast address"
    if not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified:
        return "a private, link-local, shared or reserved address"
    return None


def address_refusal(address: str, allow_loopback: bool) -> str | None:
    """Why `address` may not be called, or None: an IPv6 address that carries an IPv4 address is
    decided on that IPv4 address (and its own prefix must be global, as NAT64's and 6to4's are)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner:
            for v4 in inner:
                if (reason := _refusal(v4, allow_loopback)) is not None:
                    return f"{reason}, embedded in an IPv6 address"
            return None
    return _refusal(ip, allow_loopback)


def check_address(address: str, allow_loopback: bool) -> None:
    """Refuse an address (one the caller wrote, so it may be named) that may not be called."""
    reason = address_refusal(address, allow_loopback)
    if reason is not None:
        raise UnsafeTarget(f"{address} is {reason}")


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UnsafeTarget(f"{host} does not resolve: {exc.strerror}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def check_resolved(host: str, address: str, allow_loopback: bool) -> None:
    """Refuse `address`, which `host` resolved to, without naming it: the answer would tell a
    caller what an internal name resolves to (the address goes to the server's log only)."""
    if address_refusal(address, allow_loopback) is not None:
        log.warning("callback host %s resolves to %s, which may not be called", host, address)
        raise UnsafeTarget(
            f"{host} resolves to an address that is not public (loopback, private, link-local, "
            "shared, reserved or metadata)"
        )


def checked_addresses(host: str, port: int, allow_loopback: bool, resolver: Resolver) -> list[str]:
    """Every address `host` resolves to, each allowed; one bad address refuses the host. An IP
    literal is checked as it is, not resolved."""
    if is_ip_literal(host):
        check_address(host, allow_loopback)
        return [host.split("%", 1)[0]]
    addresses = resolver(host, port)
    if not addresses:
        raise UnsafeTarget(f"{host} has no address")
    for address in addresses:
        check_resolved(host, address, allow_loopback)
    return addresses


def check_url(url: str, dev: bool, resolver: Resolver = system_resolver) -> None:
    """Refuse a callback URL that is not https (outside development) or whose host resolves to an
    address that is not public."""
    parts = urlsplit(url)
    allowed = ("https", "http") if dev else ("https",)
    if parts.scheme not in allowed:
        raise UnsafeTarget(f"{parts.scheme or 'no'} scheme: callbacks must be https")
    if not parts.hostname:
        raise UnsafeTarget("the URL has no host")
    if parts.username or parts.password:
        raise UnsafeTarget("credentials in the URL are not allowed")
    checked_addresses(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), dev, resolver)


class GuardedBackend(httpcore.SyncBackend):
    """Connects only to a checked address: it resolves, checks, and connects to that very address
    (TLS still verifies the host name), then checks the peer once more."""

    def __init__(self, allow_loopback: bool, resolver: Resolver = system_resolver) -> None:
        self.allow_loopback, self.resolver = allow_loopback, resolver

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        address = checked_addresses(host, port, self.allow_loopback, self.resolver)[0]
        stream = super().connect_tcp(address, port, timeout, local_address, socket_options)
        peer = stream.get_extra_info("server_addr")
        if peer:
            check_resolved(host, str(peer[0]), self.allow_loopback)
        return stream


# --- delivery ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    outcome: str  # delivered | failed | refused
    status_code: int | None
    error: str | None
    duration_ms: float


def message(event: str, data: dict[str, Any]) -> str:
    """The body, as Standard Webhooks recommends: type, timestamp, data."""
    return json.dumps({"type": event, "timestamp": datetime.now(UTC).isoformat(), "data": data})


def new_webhook_id() -> str:
    return "msg_" + uuid.uuid4().hex


def signed_headers(secret: str, webhook_id: str, body: str, when: datetime | None = None) -> dict[str, str]:
    when = when or datetime.now(UTC)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": Webhook(secret).sign(webhook_id, when, body),
        "content-type": "application/json",
        "user-agent": "neuron-atlas-webhooks/1",
    }


def deliver(
    url: str,
    secret: str,
    webhook_id: str,
    body: str,
    timeout_s: float,
    dev: bool,
    resolver: Resolver = system_resolver,
) -> Attempt:
    """One POST of a signed message; 2xx is delivered, anything else (3xx included) failed."""
    started = time.monotonic()

    def took() -> float:
        return round((time.monotonic() - started) * 1000, 1)

    try:
        check_url(url, dev, resolver)
        with httpcore.ConnectionPool(
            ssl_context=ssl.create_default_context(), network_backend=GuardedBackend(dev, resolver), retries=0
        ) as pool:
            response = pool.request(
                "POST",
                url,
                headers=list(signed_headers(secret, webhook_id, body).items()),
                content=body.encode(),
                extensions={
                    "timeout": {
                        "connect": timeout_s,
                        "read": timeout_s,
                        "write": timeout_s,
                        "pool": timeout_s,
                    }
                },
            )
    except UnsafeTarget as exc:
        return Attempt("refused", None, str(exc), took())
    except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError, OSError) as exc:
        return Attempt("failed", None, f"{type(exc).__name__}: {exc}"[:300], took())
    if 200 <= response.status < 300:
        return Attempt("delivered", response.status, None, took())
    note = " (redirects are not followed)" if 300 <= response.status < 400 else ""
    return Attempt("failed", response.status, f"HTTP {response.status}{note}", took())


def next_delay(settings: WebhookSettings, attempt: int, first_at: float, now: float) -> float | None:
    """The back-off before attempt `attempt + 1`, or None when retries are spent (count or age)."""
    if attempt > len(settings.retry_delays_s):
        return None
    delay = settings.retry_delays_s[attempt - 1]
    if now + delay - first_at > settings.max_age_s:
        return None
    return delay
