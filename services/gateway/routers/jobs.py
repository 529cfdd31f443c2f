"""`/v1/jobs`: submit, poll, list, cancel, relabel and delete jobs."""

from __future__ import annotations

import difflib
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from neuron_atlas_client.contracts.api import JobFromBucket, JobPublic, JobSpec, JobsPublic, RelabelRequest
from neuron_atlas_client.options import PipelineOptions
from services.gateway.deps import JobDep, JobsDep, Services, ServicesDep, StoreDep, TenantDep
from services.gateway.idempotency import IdempotentRequest
from services.gateway.methods import JOB_ID
from services.gateway.model_registry import get_layers, job_model_for
from services.gateway.page_tokens import PAGE_TOKEN_PATTERN, decode_page_token, encode_page_token
from services.gateway.problems import RETRY_AFTER_S, Problem
from services.gateway.quotas import llm_spend_used_up, too_many_jobs
from services.gateway.results import model_keys
from services.gateway.submission import SUBMIT_BODY, read_submission
from services.gateway.submit import (
    EnqueueFailed,
    collect_uploads,
    import_prefix,
    limits_of,
    new_job_id,
    submit,
)
from shared.jobs.job_public import job_public
from shared.jobs.jobstore import ACTIVE
from shared.jobs.queue import LABELLING_RELABEL, get_app, job_canvas
from shared.models.model_names import check_allowed
from shared.models.registered_model import JobModel
from shared.storage import artifacts
from shared.storage.stores import PrefixedStore
from shared.webhooks.delivery import UnsafeTarget, check_url

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def check_callbacks(spec: JobSpec, dev: bool) -> None:
    """Refuse unsafe callback URLs at once (they are checked again on every connection)."""
    for index, callback in enumerate(spec.callbacks):
        try:
            check_url(callback.url, dev)
        except UnsafeTarget as exc:
            raise Problem(
                422,
                "invalid-callback",
                f"callbacks[{index}].url cannot be called.",
                str(exc),
                fix="Use an https URL on a public address.",
            ) from None


def job_model_of(store: Any, tenant: str, options: PipelineOptions) -> JobModel | None:
    """The registered model a spec names. A path is refused: the API never reads a file that a
    caller names on a worker's disk (another tenant's, or a secret)."""
    if options.weights is not None:
        raise Problem(
            422,
            "invalid-spec",
            "options.weights is a file path, and the API never takes one.",
            fix="Register the model with POST /v1/models, then pass its id as options.model_id.",
        )
    if options.model_id is None:
        return None
    if "model" in options.model_fields_set:
        raise Problem(
            422,
            "invalid-spec",
            "options.model and options.model_id are both given.",
            fix="Pass only model_id: the registered model brings its architecture.",
        )
    try:
        model = job_model_for(store, tenant, options.model_id)
    except Problem as exc:
        if exc.status != 404:
            raise
        # A reference in the body, not the resource addressed: 422, the same for a model of
        # another tenant as for none at all.
        raise Problem(
            422,
            "invalid-spec",
            f"options.model_id {options.model_id} names none of your models.",
            fix="GET /v1/models lists them; register one with POST /v1/models.",
        ) from None
    check_fits_model(store, tenant, options, model)
    return model


def job_models_of(
    store: Any, tenant: str, options: PipelineOptions
) -> tuple[PipelineOptions, dict[str, JobModel]]:
    """A multi-model spec's registered models, each checked exactly as `options.model_id` is (the
    tenant's own, or a 422 that says nothing of other tenants'; a path refused), and the options
    with each registered model's architecture and head filled in (`model_ids` become `models`).
    Keys: the models' keys in the job."""
    found: dict[str, JobModel] = {}
    resolved = []
    field = "options.models" if options.models is not None else "options.model_ids"
    for index, entry in enumerate(options.target_models()):
        where = f"{field}[{index}]"
        if entry.weights is not None:
            raise Problem(
                422,
                "invalid-spec",
                f"{where}.weights is a file path, and the API never takes one.",
                fix=f"Register the model with POST /v1/models, then pass its id as {where}.model_id.",
            )
        if entry.model_id is None:
            resolved.append(entry)
            continue
        if "model" in entry.model_fields_set:
            raise Problem(
                422,
                "invalid-spec",
                f"{where}.model and {where}.model_id are both given.",
                fix="Pass only model_id: the registered model brings its architecture.",
            )
        try:
            model = job_model_for(store, tenant, entry.model_id)
        except Problem as exc:
            if exc.status != 404:
                raise
            raise Problem(  # the same for a model of another tenant as for none at all
                422,
                "invalid-spec",
                f"{where} names model {entry.model_id}, which is none of your models.",
                fix="GET /v1/models lists them; register one with POST /v1/models.",
            ) from None
        check_fits_model(store, tenant, options.for_model(entry), model, where)
        found[entry.resolved_key] = model
        resolved.append(
            entry.model_copy(
                update={
                    "model": model.record.architecture,
                    "num_classes": model.record.num_classes,
                    "key": entry.resolved_key,
                }
            )
        )
    return options.model_copy(update={"models": tuple(resolved), "model_ids": None}), found


def check_fits_model(
    store: Any, tenant: str, options: PipelineOptions, model: JobModel, where: str = "options"
) -> None:
    """Options that the registered model decides must agree with it, now rather than in a
    worker an hour later: its head's size, and layers it has."""
    record = model.record
    if options.num_classes is not None and options.num_classes != record.num_classes:
        raise Problem(
            422,
            "invalid-spec",
            f"{where}.num_classes is {options.num_classes}, and model {record.id} has a head of "
            f"{record.num_classes} outputs.",
            fix="Leave num_classes out: the registered model brings its head.",
        )
    if options.layers is None:
        return
    known = [layer.name for layer in get_layers(store, tenant, record.id).layers]
    unknown = [name for name in options.layers if name not in known]
    if unknown:
        close = {name: difflib.get_close_matches(name, known, n=3, cutoff=0.5) for name in unknown}
        hints = "; ".join(f"{n}: did you mean {', '.join(c)}?" for n, c in close.items() if c)
        raise Problem(
            422,
            "invalid-spec",
            f"{where}.layers names {', '.join(repr(n) for n in unknown[:5])}, which model "
            f"{record.id} ({record.architecture}) does not have.",
            hints,
            fix=f"GET /v1/models/{record.id}/layers lists the layers it has.",
        )


def check_model_names(options: PipelineOptions, allowed: tuple[str, ...]) -> None:
    """The captioner and embedder a spec names must be hub ids the operator allows: a worker
    loads what a name resolves to, a local folder first (`shared.models.model_names`)."""
    check_allowed("options.caption_model", options.caption_model, allowed)
    check_allowed("options.embed_model", options.embed_model, allowed)


def check_llm_spend(services: Services, tenant: str) -> None:
    """429 with Retry-After once the tenant's labelling runs have spent its window's tokens."""
    quota = services.settings.quota(tenant)
    spent, window_left_s = services.jobs.llm_spend(tenant, services.infra.llm_spend_window_s)
    if spent >= quota.max_llm_tokens_per_window:
        raise llm_spend_used_up(quota, spent, window_left_s)


def enqueue(job_id: str, shards: int, models: int = 1) -> None:
    job_canvas(job_id, shards, models).apply_async()


@router.post("", status_code=202, response_model=JobPublic, openapi_extra=SUBMIT_BODY)
async def create_job(
    request: Request, response: Response, tenant: TenantDep, services: ServicesDep
) -> JobPublic | Response:
    """Submit images (multipart files and archives, or a bucket prefix) with a spec."""
    settings = services.settings
    submission = await read_submission(request)
    check_model_names(submission.spec.options, services.infra.allowed_hub_models)
    registered: dict[str, JobModel] = {}
    model = None
    if submission.spec.options.multi_model:
        options, registered = await run_in_threadpool(
            job_models_of, services.store, tenant, submission.spec.options
        )
        submission.spec = submission.spec.model_copy(update={"options": options})
    else:
        model = await run_in_threadpool(job_model_of, services.store, tenant, submission.spec.options)
    if model is not None:
        options = submission.spec.options.model_copy(
            update={"model": model.record.architecture, "num_classes": model.record.num_classes}
        )
        submission.spec = submission.spec.model_copy(update={"options": options})
    await run_in_threadpool(check_callbacks, submission.spec, services.infra.environment == "development")
    idempotent: IdempotentRequest | None = None
    key = request.headers.get("idempotency-key")
    if key:
        reserved = await IdempotentRequest.reserve(
            services.jobs, tenant, key, submission.document, submission.uploads, settings.idempotency_ttl_s
        )
        if isinstance(reserved, Response):
            return reserved
        idempotent = reserved

    quota, spec = settings.quota(tenant), submission.spec
    limits = limits_of(settings, quota)
    job_id = new_job_id()
    try:
        await run_in_threadpool(check_llm_spend, services, tenant)
    except Problem:
        if idempotent:
            await idempotent.release()
        raise
    # The slot is taken before the upload is stored, so a refused job costs no storage.
    if not await run_in_threadpool(services.jobs.take_slot, tenant, job_id, quota.max_concurrent_jobs):
        if idempotent:
            await idempotent.release()
        raise too_many_jobs(quota, settings.quota_retry_after_s)

    def collect(view: Any) -> Any:
        if isinstance(spec, JobFromBucket):
            return import_prefix(services.store, view, tenant, spec, limits)
        return collect_uploads(view, submission.uploads, spec.options, limits)

    try:
        record = await run_in_threadpool(
            submit,
            services.store,
            services.jobs,
            tenant,
            spec,
            collect,
            enqueue,
            job_id,
            quota.max_llm_tokens_per_job,
            model,
            registered,
        )
    except BaseException as exc:
        await run_in_threadpool(services.jobs.release_slot, tenant, job_id)
        if idempotent:
            await idempotent.release()
        if isinstance(exc, EnqueueFailed):
            raise Problem(
                503,
                "queue-unavailable",
                "The job could not be queued.",
                f"The queue did not take it ({exc}); nothing was kept.",
                fix="Submit again shortly.",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            ) from exc
        raise
    job = job_public(record)
    location = f"/v1/jobs/{record.id}"
    if idempotent:
        await idempotent.complete(202, location, job.model_dump(mode="json"))
    response.headers["Location"] = location
    return job


@router.get("", response_model=JobsPublic)
def list_jobs(
    tenant: TenantDep,
    jobs: JobsDep,
    page_size: int = Query(20, ge=1, le=100),
    page_token: str | None = Query(
        None, pattern=PAGE_TOKEN_PATTERN, description="`next_page_token` of the previous page."
    ),
) -> JobsPublic:
    """The caller's jobs, newest first."""
    after = decode_page_token(page_token) if page_token else None
    records, cursor = jobs.page(tenant, page_size, after)
    return JobsPublic(jobs=[job_public(r) for r in records], next_page_token=encode_page_token(cursor))


@router.get("/" + JOB_ID, response_model=JobPublic)
async def get_job(job: JobDep) -> JobPublic:
    """Status, current stage, per-stage progress, timestamps and error."""
    return job_public(job)


@router.post("/{job_id}:cancel", status_code=202, response_model=JobPublic)
def cancel_job(job: JobDep, jobs: JobsDep) -> JobPublic:
    """Stop the job: queued work is dropped, running work stops at the next shard."""
    found = jobs.request_cancel(job.id)
    if found not in ACTIVE:
        raise Problem(
            409,
            "conflict",
            f"The job is already {found}.",
            fix="Only queued or running jobs can be cancelled.",
        )
    return job_public(jobs.get(job.id) or job)


@router.post("/{job_id}:relabel", status_code=202, response_model=JobPublic)
def relabel_job(job: JobDep, jobs: JobsDep, services: ServicesDep, request: RelabelRequest) -> JobPublic:
    """Label a finished job again with other settings, without recomputing captions, clusters
    or activations; the job runs (stage `labelling`) and succeeds again with new labels."""
    if len(model_keys(PrefixedStore(services.store, artifacts.job_prefix(job.id)))) > 1:
        # The relabel task writes one hierarchy.json at the job's root; a multi-model job's are
        # per model, with models.json and the comparisons built from them.
        raise Problem(
            409,
            "conflict",
            "A job of several models cannot be relabelled yet.",
            fix="Submit the job again with the labelling settings you want.",
        )
    if not request.offline:
        check_llm_spend(services, job.tenant)
    found = jobs.reopen(job.id, "labelling")
    if found != "succeeded":
        raise Problem(409, "conflict", f"The job is {found}.", fix="Only a succeeded job can be relabelled.")
    overrides = request.model_dump(exclude_none=True)
    get_app().send_task(LABELLING_RELABEL, args=[job.id, overrides])
    return job_public(jobs.get(job.id) or job)


@router.delete("/" + JOB_ID, status_code=204)
def delete_job(job: JobDep, jobs: JobsDep, store: StoreDep) -> Response:
    """Remove the job's record and all its objects. A `cancelling` job may be deleted too: if
    its work was lost it would never reach `cancelled`, and a task still running for it removes
    what it writes once it sees the job is gone."""
    if job.status in ("queued", "running"):
        raise Problem(
            409,
            "conflict",
            f"The job is {job.status}.",
            fix="Cancel it first (POST :cancel), then delete it.",
        )
    store.delete_prefix(artifacts.job_prefix(job.id))
    jobs.delete(job.id)
    return Response(status_code=204)
