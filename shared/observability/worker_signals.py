"""Worker hooks for logs and metrics, on Celery's signals: JSON logs carrying each task's job and
tenant (`shared.observability.logs`), the metrics server (`shared.observability.metrics`),
and retries counted."""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from typing import Any

import redis
from celery import Celery, signals

from shared.jobs import comparisons
from shared.observability import logs, metrics
from shared.settings import InfraSettings

_tokens: dict[str, Any] = {}


@lru_cache(maxsize=256)
def _tenant_of(redis_url: str, job_id: str) -> str | None:
    client = redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=5)
    try:
        return client.hget(f"job:{job_id}", "tenant")  # type: ignore[return-value]
    finally:
        client.close()


def install(app: Celery, settings: InfraSettings, queues: tuple[str, ...]) -> None:
    def setup_logging(loglevel: Any = logging.INFO, **_: Any) -> None:
        # Connected, so Celery leaves logging to us: every line one JSON object.
        logs.configure_logging(f"worker:{app.main}", loglevel or logging.INFO, settings.log_format)

    def worker_init(**_: Any) -> None:
        if settings.worker_metrics_port:
            metrics.start_worker_metrics(settings.worker_metrics_port, settings.redis_url, queues)

    def task_prerun(task_id: str, args: Any = (), task: Any = None, **_: Any) -> None:
        if getattr(task, "name", None) == comparisons.COMPARE:
            # A comparison concerns two jobs, not one: its lines carry the tenant (its first
            # argument) and no job id.
            _tokens[task_id] = logs.new_context(job_id=None, tenant=args[0] if args else None)
            return
        job_id = args[0] if args and isinstance(args[0], str) and len(args[0]) == 32 else None
        tenant = None
        if job_id is not None:
            try:
                tenant = _tenant_of(settings.redis_url, job_id)
            except Exception:  # the log context is best effort; the task itself goes on
                tenant = None
        _tokens[task_id] = logs.new_context(job_id=job_id, tenant=tenant)

    def task_postrun(task_id: str, **_: Any) -> None:
        token = _tokens.pop(task_id, None)
        if token is not None:
            logs.reset_context(token)

    def task_retry(request: Any = None, **_: Any) -> None:
        metrics.TASK_RETRIES.labels(getattr(request, "task", None) or "unknown").inc()

    def process_shutdown(pid: int | None = None, **_: Any) -> None:
        metrics.process_exited(pid or os.getpid())

    # weak=False: the receivers are closures that nothing else keeps alive.
    signals.setup_logging.connect(setup_logging, weak=False)
    signals.worker_init.connect(worker_init, weak=False)
    signals.task_prerun.connect(task_prerun, weak=False)
    signals.task_postrun.connect(task_postrun, weak=False)
    signals.task_retry.connect(task_retry, weak=False)
    signals.worker_process_shutdown.connect(process_shutdown, weak=False)
