"""`/ui/api/jobs/{id}/comparisons/{key}/...`: the explorer's comparison view of a multi-model job
(docs/explorer.md, "Comparing two models"): its baseline against model `key`, read from the job's
own `comparisons/{key}.json` and both models' `models/{key}/hierarchy.json`. Behind the job's
dependency like every `/ui/api/jobs` route: another tenant's job is a 404 like one that never
existed."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path

from neuron_atlas_client.options import MODEL_KEY_PATTERN
from services.gateway.deps import JobDep, StoreDep
from services.gateway.explorer.comparison_view import ComparisonView, comparison_view
from services.gateway.explorer.recent import Recent
from services.gateway.problems import Problem
from services.gateway.results import finished, model_keys
from shared.jobs.jobstore import JobRecord
from shared.storage import artifacts
from shared.storage.stores import PrefixedStore, S3Store

router = APIRouter(prefix="/ui/api/jobs", tags=["explorer"])
ModelKey = Annotated[
    str, Path(pattern=MODEL_KEY_PATTERN, description="The model compared with the job's baseline.")
]


class _ViewCache:
    """A few views, keyed by job, when it finished (a relabelled job's labels are read afresh)
    and model; the job's tenant was checked by its dependency before any lookup."""

    def __init__(self) -> None:
        self._views: Recent[tuple[str, str, str], ComparisonView] = Recent()

    def get(self, job: JobRecord, store: S3Store, key: str) -> ComparisonView:
        finished(job)
        cache_key = (job.id, str(job.finished_at), key)
        view = self._views.get(cache_key)
        if view is None:
            view = _load(job, store, key)
            self._views.put(cache_key, view)
        return view


def _load(job: JobRecord, store: S3Store, key: str) -> ComparisonView:
    job_view = PrefixedStore(store, artifacts.job_prefix(job.id))
    keys = model_keys(job_view)
    if key not in keys[1:]:
        others = ", ".join(keys[1:]) or "none (it explained one model)"
        raise Problem(
            404,
            "not-found",
            f"Job {job.id} has no comparison with model {key}.",
            fix=f"Its baseline {keys[0]} is compared with: {others}.",
        )
    document = json.loads(job_view.get_bytes(artifacts.comparison_key(key)))
    hierarchy_a, hierarchy_b = (
        json.loads(job_view.get_bytes(artifacts.model_prefix(k) + artifacts.HIERARCHY))
        for k in (keys[0], key)
    )
    # the job's own explorer pages are its baseline's (model A); model B has none of its own
    return comparison_view(
        document, hierarchy_a, hierarchy_b, title=f"{keys[0]} against {key}", links={"a": job.id}
    )


_views = _ViewCache()


@router.get("/{job_id}/comparisons/{key}/summary")
def ui_job_comparison_summary(job: JobDep, store: StoreDep, key: ModelKey) -> dict[str, Any]:
    """The baseline against model `key`: both models, the counts per change marker, each layer."""
    return _views.get(job, store, key).summary()


@router.get("/{job_id}/comparisons/{key}/children")
def ui_job_comparison_children(
    job: JobDep, store: StoreDep, key: ModelKey, parent: str | None = None
) -> dict[str, Any]:
    """The concepts under `parent` (the top level without it), each with its change marker."""
    try:
        return _views.get(job, store, key).children(parent)
    except KeyError:
        raise Problem(404, "not-found", f"No concept {parent} in job {job.id}.") from None


@router.get("/{job_id}/comparisons/{key}/changed")
def ui_job_comparison_changed(job: JobDep, store: StoreDep, key: ModelKey) -> dict[str, Any]:
    """Only the changed concepts (changed, vanished, appeared), with their paths."""
    return _views.get(job, store, key).changed()


@router.get("/{job_id}/comparisons/{key}/concepts/{cluster_id}")
def ui_job_comparison_concept(job: JobDep, store: StoreDep, key: ModelKey, cluster_id: str) -> dict[str, Any]:
    """One concept in both models: both groups per layer, gained and lost neurons, the tests."""
    try:
        return _views.get(job, store, key).concept(cluster_id)
    except KeyError:
        raise Problem(404, "not-found", f"No concept {cluster_id} in job {job.id}.") from None
