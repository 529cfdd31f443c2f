"""A job record as the API shows it (`JobPublic`): the gateway's answers and the webhooks' bodies.

Server side, not the client's: it reads the job store's record and redacts what a worker wrote
(`shared.public_text`), so the API's model (`neuron_atlas_client.contracts.api`) stays pure.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

from neuron_atlas_client.contracts.api import JobLinks, JobPublic, StageProgress
from neuron_atlas_client.contracts.input_check import RunWarning
from neuron_atlas_client.contracts.labels import Labelling
from neuron_atlas_client.contracts.problem import TYPE_PREFIX, ProblemDetails
from neuron_atlas_client.contracts.uncertainty import UncertaintySummary
from shared.jobs.jobstore import JobRecord
from shared.public_text import redact

INPUT_CHECK_REPORT = "input_check"  # the job store's report of the activation service's input check


def job_public(record: JobRecord) -> JobPublic:
    base = f"/v1/jobs/{record.id}"
    return JobPublic(
        id=record.id,
        status=record.status,
        stage=record.stage,
        progress={k: StageProgress(**v) for k, v in record.progress.items()},
        images=record.images,
        skipped=record.skipped,
        created_at=record.created_at,
        updated_at=record.updated_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        error=_problem(record.error),
        labelling=_report(Labelling, record.reports.get("labelling")),
        uncertainty=_report(UncertaintySummary, record.reports.get("uncertainty")),
        warnings=[
            RunWarning.model_validate(w)
            for w in (record.reports.get(INPUT_CHECK_REPORT) or {}).get("warnings", [])
        ],
        links=JobLinks(
            self=base,
            hierarchy=f"{base}/hierarchy",
            artifacts=f"{base}/artifacts",
            cancel=f"{base}:cancel",
        ),
    )


def _problem(error: dict[str, Any] | None) -> ProblemDetails | None:
    """Workers record problem details; records from before carry the bare kind as `type`. A
    worker's message may name its disk or a host: the tenant sees it redacted (the worker's log
    keeps the whole text)."""
    if error is None:
        return None
    kind = str(error.get("type", "internal"))
    shown = {
        key: redact(value) if key in ("title", "detail", "fix") and isinstance(value, str) else value
        for key, value in error.items()
    }
    return ProblemDetails.model_validate({**shown, "type": kind if ":" in kind else TYPE_PREFIX + kind})


Report = TypeVar("Report", bound=BaseModel)


def _report(model: type[Report], report: dict[str, Any] | None) -> Report | None:
    return None if report is None else model.model_validate(report)
