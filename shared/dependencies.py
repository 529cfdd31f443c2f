"""Which outside service an exception says is down: object storage or Redis.

Workers turn it into a retry and then a job error that names the service; the gateway into a 503
with Retry-After. Neither shows the exception's text, which names hosts, buckets and keys."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dependency:
    kind: str
    name: str


def unavailable_dependency(exc: BaseException) -> Dependency | None:
    """The service an error says is down: object storage (urllib3 and minio's server errors)
    or Redis (connection and timeout errors, and the queue's when it cannot publish); None for
    anything else."""
    import redis
    import urllib3
    from kombu.exceptions import OperationalError
    from minio.error import ServerError

    if isinstance(exc, urllib3.exceptions.HTTPError | ServerError):
        return Dependency("object-storage", "object storage")
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError | OperationalError):
        return Dependency("redis", "the job store (Redis)")
    return None
