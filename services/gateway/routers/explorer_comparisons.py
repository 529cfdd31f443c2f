"""`/ui/comparisons/{id}` and `/ui/api/comparisons/{id}/...`: the explorer's comparison view
(docs/explorer.md, "Comparing two models"), behind the same API keys and tenancy as `/v1`. A
comparison is read from the caller's own prefix (`comparisons/{tenant}/{id}/`), and its two jobs
must be the caller's too: another tenant's comparison, or one whose job is gone, is a 404 like
one that never existed."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Path
from fastapi.responses import RedirectResponse

from services.gateway.deps import JobsDep, StoreDep, TenantDep
from services.gateway.explorer.comparison_view import ComparisonView, comparison_view
from services.gateway.explorer.recent import Recent
from services.gateway.problems import Problem
from shared.jobs.comparisons import comparison_key
from shared.jobs.jobstore import JobRecord, JobStore
from shared.storage import artifacts
from shared.storage.stores import S3Store

router = APIRouter(tags=["explorer"])
ComparisonId = Path(pattern=r"^[0-9a-f]{32}$", description="The comparison's id.")


def _job(jobs: JobStore, tenant: str, job_id: str, comparison_id: str) -> JobRecord:
    record = jobs.get(job_id) if len(job_id) == 32 and job_id.isalnum() else None
    if record is None or record.tenant != tenant:
        raise Problem(404, "not-found", f"Job {job_id} of comparison {comparison_id} is no longer there.")
    if record.status != "succeeded":
        raise Problem(
            409, "job-not-finished", f"Job {job_id} of comparison {comparison_id} is {record.status}."
        )
    return record


class _ViewCache:
    """Comparison views, a few at a time, keyed by tenant, comparison and when each job finished
    (a relabelled job's labels are read afresh). A comparison.json never changes once written."""

    def __init__(self) -> None:
        self._views: Recent[tuple[str, str], tuple[tuple[str, ...], ComparisonView]] = Recent()

    @staticmethod
    def _stamps(jobs: JobStore, tenant: str, comparison_id: str, document: dict[str, Any]) -> tuple[str, ...]:
        records = [_job(jobs, tenant, document[side]["source"], comparison_id) for side in ("a", "b")]
        return tuple(f"{r.id}@{r.finished_at}" for r in records)

    def get(self, store: S3Store, jobs: JobStore, tenant: str, comparison_id: str) -> ComparisonView:
        key = (tenant, comparison_id)  # the tenant is part of the key: never another's view
        found = self._views.get(key)
        if found is not None:
            stamps, view = found
            # the jobs are checked on every answer: a deleted or relabelled job shows at once
            if self._stamps(jobs, tenant, comparison_id, view.comparison) == stamps:
                return view
        try:
            raw = store.get_bytes(comparison_key(tenant, comparison_id))
        except FileNotFoundError:
            raise Problem(404, "not-found", f"No comparison {comparison_id}.") from None
        document = json.loads(raw)
        stamps = self._stamps(jobs, tenant, comparison_id, document)
        job_a, job_b = (stamp.split("@")[0] for stamp in stamps)
        hierarchies = [
            json.loads(store.get_bytes(artifacts.job_prefix(j) + artifacts.HIERARCHY)) for j in (job_a, job_b)
        ]
        view = comparison_view(
            document,
            hierarchies[0],
            hierarchies[1],
            title=f"Comparison {comparison_id[:12]}",
            links={"a": job_a, "b": job_b},
        )
        self._views.put(key, (stamps, view))
        return view


_views = _ViewCache()


@router.get("/ui/comparisons/{comparison_id}", include_in_schema=False)
def ui_comparison_page(comparison_id: str = ComparisonId) -> RedirectResponse:
    """The comparison's page in the explorer (the page holds no data; its answers need the key)."""
    return RedirectResponse(f"/ui/#/comparison/{comparison_id}", status_code=307)


@router.get("/ui/api/comparisons/{comparison_id}/summary")
def ui_comparison_summary(
    store: StoreDep, jobs: JobsDep, tenant: TenantDep, comparison_id: str = ComparisonId
) -> dict[str, Any]:
    """The comparison's overview: both models, the counts per change marker, each layer, the nulls."""
    return _views.get(store, jobs, tenant, comparison_id).summary()


@router.get("/ui/api/comparisons/{comparison_id}/children")
def ui_comparison_children(
    store: StoreDep,
    jobs: JobsDep,
    tenant: TenantDep,
    comparison_id: str = ComparisonId,
    parent: str | None = None,
) -> dict[str, Any]:
    """The concepts under `parent` (the top level without it), each with its change marker."""
    try:
        return _views.get(store, jobs, tenant, comparison_id).children(parent)
    except KeyError:
        raise Problem(404, "not-found", f"No concept {parent} in comparison {comparison_id}.") from None


@router.get("/ui/api/comparisons/{comparison_id}/changed")
def ui_comparison_changed(
    store: StoreDep, jobs: JobsDep, tenant: TenantDep, comparison_id: str = ComparisonId
) -> dict[str, Any]:
    """Only the changed concepts (changed, vanished, appeared), with their paths."""
    return _views.get(store, jobs, tenant, comparison_id).changed()


@router.get("/ui/api/comparisons/{comparison_id}/concepts/{cluster_id}")
def ui_comparison_concept(
    store: StoreDep, jobs: JobsDep, tenant: TenantDep, cluster_id: str, comparison_id: str = ComparisonId
) -> dict[str, Any]:
    """One concept in both models: both groups per layer, gained and lost neurons, the tests."""
    try:
        return _views.get(store, jobs, tenant, comparison_id).concept(cluster_id)
    except KeyError:
        raise Problem(404, "not-found", f"No concept {cluster_id} in comparison {comparison_id}.") from None
