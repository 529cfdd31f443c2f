"""Which outside service an exception says is down: object storage, Redis, or one that a stage
calls itself (the labelling endpoint), which raises `DependencyDown`.

Workers turn it into a retry and then a job error that names the service; the gateway into a 503
with Retry-After. Neither shows the exception's text, which names hosts, buckets and keys."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dependency:
    kind: str
    name: str
    fix: str = ""  # what to do, where more can be said than "check that it is up"
    window_s: float | None = None  # how long its outages are waited out; None: DEPENDENCY_RETRY_WINDOW_S


class DependencyDown(Exception):
    """Raised by a stage whose own dependency gave no answer at all (the service is down)."""

    def __init__(self, dependency: Dependency) -> None:
        super().__init__(f"{dependency.name} did not answer")
        self.dependency = dependency


def _storage_errors() -> tuple[type[Exception], ...]:
    """Connection failures, and any answer of the S3 server that is an error of its own: a
    missing key is turned into FileNotFoundError by the stores, so an S3Error that reaches here
    is the server refusing to work (storage full, access denied, bucket gone)."""
    # minio, urllib3: the suite extra; embedded runs (labelling's stage) import this module without it
    import urllib3
    from minio.error import InvalidResponseError, S3Error, ServerError

    return (urllib3.exceptions.HTTPError, ServerError, S3Error, InvalidResponseError)


def _redis_errors() -> tuple[type[Exception], ...]:
    # redis, kombu: the suite extra, as above
    import redis
    from kombu.exceptions import OperationalError

    return (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OperationalError)


def dependency_errors() -> tuple[type[Exception], ...]:
    """Every exception class that means object storage or Redis is down."""
    return _storage_errors() + _redis_errors()


def unavailable_dependency(exc: BaseException) -> Dependency | None:
    """The service an error says is down: object storage (urllib3 and minio's server errors)
    or Redis (connection and timeout errors, and the queue's when it cannot publish); None for
    anything else."""
    if isinstance(exc, DependencyDown):
        return exc.dependency
    if isinstance(exc, _storage_errors()):
        return Dependency("object-storage", "object storage")
    if isinstance(exc, _redis_errors()):
        return Dependency("redis", "the job store (Redis)")
    return None
