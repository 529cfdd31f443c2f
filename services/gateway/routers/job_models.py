"""`/v1/jobs/{id}/models...` and `/comparison`: a multi-model job's results (issue 27;
docs/comparison.md, 'One job, several models'): the one concept tree with a section per model
(models.json), each model's own hierarchy.json, and the job's comparison of its baseline with
another model. The job's plain routes (`/hierarchy`, `/clusters`, `/neurons`) answer for the
baseline."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from neuron_atlas_client.contracts.comparison import Comparison
from neuron_atlas_client.contracts.hierarchy import Hierarchy
from neuron_atlas_client.contracts.multi_model import MultiModelResult
from neuron_atlas_client.options import MODEL_KEY_PATTERN
from services.gateway.deps import JobDep, StoreDep
from services.gateway.problems import Problem
from services.gateway.results import finished, job_result, model_keys
from shared.storage import artifacts
from shared.storage.stores import PrefixedStore

router = APIRouter(prefix="/v1/jobs", tags=["results"])
ModelKey = Annotated[str, Path(pattern=MODEL_KEY_PATTERN, description="The model's key in the job.")]


def _several(job_id: str, keys: list[str]) -> None:
    if len(keys) < 2:
        raise Problem(
            404,
            "not-found",
            f"Job {job_id} explained one model; it has no multi-model result or comparison.",
            fix="Submit options.model_ids (or options.models) with two to four models, or compare "
            "two finished jobs with POST /v1/comparisons.",
        )


@router.get("/{job_id}/models", response_model=MultiModelResult)
def get_models(job: JobDep, store: StoreDep) -> Response:
    """A multi-model job's models.json: one concept tree, and per concept each model's group and
    key evidence (schema: shared/schemas/models.schema.json)."""
    finished(job)
    view = PrefixedStore(store, artifacts.job_prefix(job.id))
    _several(job.id, model_keys(view))
    return Response(view.get_bytes(artifacts.MODELS), media_type="application/json")


@router.get("/{job_id}/models/{key}/hierarchy", response_model=Hierarchy)
def get_model_hierarchy(job: JobDep, store: StoreDep, key: ModelKey) -> Response:
    """One model's hierarchy.json: a complete single-model result (a single-model job's one
    model answers too)."""
    return Response(job_result(job, store, key).body, media_type="application/json")


@router.get("/{job_id}/comparison", response_model=Comparison)
def get_job_comparison(
    job: JobDep,
    store: StoreDep,
    model: Annotated[
        str | None,
        Query(
            pattern=MODEL_KEY_PATTERN,
            description="The model compared with the baseline; default: the second.",
        ),
    ] = None,
) -> Response:
    """A multi-model job's comparison.json of its baseline (the first model) with another of its
    models, as POST /v1/comparisons would give for two jobs (schema:
    shared/schemas/comparison.schema.json)."""
    finished(job)
    view = PrefixedStore(store, artifacts.job_prefix(job.id))
    keys = model_keys(view)
    _several(job.id, keys)
    if model is not None and model not in keys[1:]:
        raise Problem(
            404,
            "not-found",
            f"Job {job.id} has no comparison with model {model}.",
            fix=f"Its baseline {keys[0]} is compared with: {', '.join(keys[1:])}.",
        )
    return Response(view.get_bytes(artifacts.comparison_key(model or keys[1])), media_type="application/json")
