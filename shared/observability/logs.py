"""Structured logs: one JSON object per line, each with the `job_id` and `tenant` it concerns
(null where it concerns none), from the gateway and every worker, so one job can be followed
through the whole suite (`grep '"job_id": "<id>"'`, or any log pipeline).

The context is a dict held in a context variable: the gateway binds a fresh one per request
(tenant once the key is checked, the job from the path or the new job's Location), a worker one
per task (job id = the task's first argument). A dict, not one variable per field, because code
that runs in a copied context (FastAPI's thread pool, Starlette's middleware task) then still
writes into the request's own context.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any

_CONTEXT: ContextVar[dict[str, Any] | None] = ContextVar("neuron_atlas_log_context", default=None)
FIELDS = ("job_id", "tenant")
# Fields a record may carry (`extra=`) that its JSON line keeps: a request's (the gateway's request
# log), a progress line's (the CLI off a terminal, neuron_atlas.progress_lines) and an error's or
# warning's kind and fix (the CLI's).
EXTRA_FIELDS = (
    "method",
    "path",
    "status",
    "duration_ms",
    "event",
    "stage",
    "done",
    "total",
    "elapsed_s",
    "eta_s",
    "kind",
    "fix",
)


def new_context(**fields: Any) -> Token[dict[str, Any] | None]:
    """A fresh context for one request or task; `reset_context(token)` when it ends."""
    return _CONTEXT.set({name: fields.get(name) for name in FIELDS})


def reset_context(token: Token[dict[str, Any] | None]) -> None:
    _CONTEXT.reset(token)


def bind(**fields: Any) -> None:
    """Add fields to the current request's or task's context (no-op outside one)."""
    context = _CONTEXT.get()
    if context is not None:
        context.update({k: v for k, v in fields.items() if v is not None})


def context() -> dict[str, Any]:
    return dict(_CONTEXT.get() or {})


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        bound = _CONTEXT.get() or {}
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
            "job_id": getattr(record, "job_id", None) or bound.get("job_id"),
            "tenant": getattr(record, "tenant", None) or bound.get("tenant"),
        }
        for name in EXTRA_FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(service: str, level: int | str = logging.INFO, fmt: str = "json") -> None:
    """Route every logger (uvicorn's and Celery's included) to one stderr handler."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task", "celery.redirected"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # Our request log replaces uvicorn's access log (it carries the tenant and job id).
    logging.getLogger("uvicorn.access").disabled = True
