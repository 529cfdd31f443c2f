"""`/v1/jobs`: submit, poll, list, cancel, delete, and read results."""

from __future__ import annotations

import base64
import binascii
import json
from collections import OrderedDict
from threading import Lock
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from services.gateway.deps import JobDep, JobsDep, ServicesDep, SettingsDep, StoreDep, TenantDep
from services.gateway.problems import Problem
from services.gateway.schemas import (
    ArtifactPublic,
    ArtifactsPublic,
    JobFromBucket,
    JobPublic,
    JobSpec,
    JobsPublic,
    NeuronClusterPublic,
    NeuronPublic,
    RelabelRequest,
)
from services.gateway.submit import (
    EnqueueFailed,
    Upload,
    collect_uploads,
    fingerprint,
    import_prefix,
    limits_of,
    submit,
)
from shared import artifacts
from shared.jobstore import ACTIVE, JobRecord
from shared.queue import LABELLING_RELABEL, get_app, job_canvas
from shared.storage import PrefixedStore, S3Store, get_json

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

_SUBMIT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["spec"],
                    "properties": {
                        "spec": {"type": "string", "description": "JSON: {options, captions}"},
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "images, zip/tar archives, metadata.csv/jsonl",
                        },
                    },
                }
            },
            "application/json": {"schema": JobFromBucket.model_json_schema()},
        },
    }
}


def enqueue(job_id: str, shards: int) -> None:
    job_canvas(job_id, shards).apply_async()


@router.post("", status_code=202, response_model=JobPublic, openapi_extra=_SUBMIT_BODY)
async def create_job(
    request: Request, response: Response, tenant: TenantDep, services: ServicesDep
) -> JobPublic | Response:
    """Submit images (multipart files and archives, or a bucket prefix) with a spec."""
    settings = services.settings
    content_type = request.headers.get("content-type", "")
    uploads: list[Upload] = []
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=10_000, max_fields=100, max_part_size=1024 * 1024)
        spec_field = form.get("spec")
        if spec_field is None:
            raise Problem(
                422, "invalid-spec", "The `spec` part is missing.", fix="Add -F spec='{\"options\": {}}'."
            )
        spec_text = spec_field if isinstance(spec_field, str) else (await spec_field.read()).decode()
        spec_doc = _json(spec_text)
        spec: JobSpec = JobSpec.model_validate(spec_doc)
        for _, value in form.multi_items():
            if isinstance(value, UploadFile) and value is not spec_field:
                uploads.append((value.filename or "upload", value.file))
        if not uploads:
            raise Problem(
                422, "invalid-input", "No files were sent.", fix="Add images with -F files=@image.jpg."
            )
    elif content_type.startswith("application/json"):
        spec_doc = _json((await request.body()).decode())
        spec = JobFromBucket.model_validate(spec_doc)
    else:
        raise Problem(
            415,
            "unsupported-media-type",
            "Send multipart/form-data or application/json.",
            headers={"Accept-Post": "multipart/form-data, application/json"},
        )

    key = request.headers.get("idempotency-key")
    print_ = None
    if key:
        print_ = await run_in_threadpool(fingerprint, spec_doc, uploads)
        first = await run_in_threadpool(
            services.jobs.reserve_idempotency, tenant, key, print_, settings.idempotency_ttl_s
        )
        if first is not None:
            return _replay(first, print_)

    limits = limits_of(settings)
    if isinstance(spec, JobFromBucket):
        source = spec

        def collect(view: Any) -> Any:
            return import_prefix(services.store, view, tenant, source, limits)
    else:

        def collect(view: Any) -> Any:
            return collect_uploads(view, uploads, spec.options, limits)

    try:
        record = await run_in_threadpool(
            submit, services.store, services.jobs, tenant, spec, collect, enqueue
        )
    except EnqueueFailed as exc:
        if key:
            await run_in_threadpool(services.jobs.release_idempotency, tenant, key)
        raise Problem(503, "queue-unavailable", "The job could not be queued.", str(exc)) from exc
    except BaseException:
        if key:
            await run_in_threadpool(services.jobs.release_idempotency, tenant, key)
        raise
    job = JobPublic.of(record)
    location = f"/v1/jobs/{record.id}"
    if key and print_:
        answer = {"status": 202, "location": location, "body": job.model_dump(mode="json")}
        await run_in_threadpool(
            services.jobs.complete_idempotency, tenant, key, print_, answer, settings.idempotency_ttl_s
        )
    response.headers["Location"] = location
    return job


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise Problem(422, "invalid-spec", "The spec is not valid JSON.", f"{exc.msg} at {exc.pos}") from None


def _replay(first: dict[str, Any], print_: str) -> Response:
    if first["fingerprint"] != print_:
        raise Problem(
            422,
            "idempotency-key-reused",
            "This Idempotency-Key was used for a different request.",
            fix="Use a new key for a new submission.",
        )
    if first["state"] != "done":
        raise Problem(
            409,
            "idempotency-key-in-use",
            "A request with this Idempotency-Key is in progress.",
            fix="Retry shortly.",
        )
    answer = first["response"]
    return Response(
        json.dumps(answer["body"]),
        status_code=answer["status"],
        media_type="application/json",
        headers={"Location": answer["location"], "Idempotent-Replayed": "true"},
    )


@router.get("", response_model=JobsPublic)
def list_jobs(
    tenant: TenantDep,
    jobs: JobsDep,
    page_size: int = Query(20, ge=1, le=100),
    page_token: str | None = None,
) -> JobsPublic:
    """The caller's jobs, newest first."""
    after = _decode_token(page_token) if page_token else None
    records, cursor = jobs.page(tenant, page_size, after)
    token = base64.urlsafe_b64encode(cursor.encode()).decode() if cursor else None
    return JobsPublic(jobs=[JobPublic.of(r) for r in records], next_page_token=token)


def _decode_token(token: str) -> str:
    try:
        cursor = base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        cursor = ""
    stamp, _, job_id = cursor.partition(":")
    if not (stamp.isdigit() and len(job_id) == 32):
        raise Problem(
            400, "bad-request", "Invalid page_token.", fix="Pass the next_page_token of the previous page."
        )
    return cursor


@router.get("/{job_id}", response_model=JobPublic)
async def get_job(job: JobDep) -> JobPublic:
    """Status, current stage, per-stage progress, timestamps and error."""
    return JobPublic.of(job)


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
    return JobPublic.of(jobs.get(job.id) or job)


@router.post("/{job_id}:relabel", status_code=202, response_model=JobPublic)
def relabel_job(job: JobDep, jobs: JobsDep, request: RelabelRequest) -> JobPublic:
    """Label a finished job again with other settings, without recomputing captions, clusters
    or activations; the job runs (stage `labelling`) and succeeds again with new labels."""
    found = jobs.reopen(job.id, "labelling")
    if found != "succeeded":
        raise Problem(409, "conflict", f"The job is {found}.", fix="Only a succeeded job can be relabelled.")
    overrides = request.model_dump(exclude_none=True)
    get_app().send_task(LABELLING_RELABEL, args=[job.id, overrides])
    return JobPublic.of(jobs.get(job.id) or job)


@router.delete("/{job_id}", status_code=204)
def delete_job(job: JobDep, jobs: JobsDep, store: StoreDep) -> Response:
    """Remove the job's record and all its objects."""
    if job.status in ACTIVE:
        raise Problem(
            409,
            "conflict",
            f"The job is {job.status}.",
            fix="Cancel it and wait for `cancelled` before deleting.",
        )
    store.delete_prefix(artifacts.job_prefix(job.id))
    jobs.delete(job.id)
    _hierarchies.pop(job.id)
    return Response(status_code=204)


class _HierarchyCache:
    """Parsed hierarchies of finished jobs, a few at a time; keyed by when the job finished,
    so a relabelled job (finished again) is read afresh by every gateway replica."""

    def __init__(self, size: int = 8) -> None:
        self._items: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._size = size
        self._lock = Lock()

    def get(self, job: JobRecord, store: S3Store) -> dict[str, Any]:
        if job.status != "succeeded":
            raise Problem(
                409,
                "job-not-finished",
                f"The job is {job.status}; its hierarchy is not ready.",
                fix="Poll the job until it has succeeded.",
            )
        key = f"{job.id}@{job.finished_at}"
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        document: dict[str, Any] = get_json(
            PrefixedStore(store, artifacts.job_prefix(job.id)), artifacts.HIERARCHY
        )
        with self._lock:
            self._items[key] = document
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return document

    def pop(self, job_id: str) -> None:
        with self._lock:
            for key in [k for k in self._items if k.startswith(f"{job_id}@")]:
                del self._items[key]


_hierarchies = _HierarchyCache()


@router.get("/{job_id}/hierarchy")
def get_hierarchy(job: JobDep, store: StoreDep) -> dict[str, Any]:
    """The job's hierarchy.json (schema: shared/schemas/hierarchy.schema.json)."""
    return _hierarchies.get(job, store)


@router.get("/{job_id}/clusters/{cluster_id}")
def get_cluster(job: JobDep, store: StoreDep, cluster_id: str) -> dict[str, Any]:
    """One cluster of the hierarchy: label, images, neuron group, difference neurons."""
    for cluster in _hierarchies.get(job, store)["clusters"]:
        if cluster["id"] == cluster_id:
            return dict(cluster)
    raise Problem(404, "not-found", f"No cluster {cluster_id} in job {job.id}.")


@router.get("/{job_id}/neurons/{layer}/{channel}", response_model=NeuronPublic)
def get_neuron(job: JobDep, store: StoreDep, layer: str, channel: int) -> NeuronPublic:
    """The clusters whose neuron group holds this neuron."""
    hierarchy = _hierarchies.get(job, store)
    sizes = {entry["name"]: entry["channels"] for entry in hierarchy["layers"]}
    if layer not in sizes or not 0 <= channel < sizes[layer]:
        raise Problem(
            404,
            "not-found",
            f"No neuron {layer}/{channel} in job {job.id}.",
            fix=f"Layers: {', '.join(sizes)}.",
        )
    found = []
    for cluster in hierarchy["clusters"]:
        difference = {(n["layer"], n["channel"]) for n in cluster["difference_neurons"]}
        for neuron in cluster["neurons"]:
            if neuron["layer"] == layer and neuron["channel"] == channel:
                found.append(
                    NeuronClusterPublic(
                        id=cluster["id"],
                        level=cluster["level"],
                        label=cluster["label"],
                        support=neuron["support"],
                        difference=(layer, channel) in difference,
                        evidence=neuron.get("evidence"),
                    )
                )
    return NeuronPublic(layer=layer, channel=channel, clusters=found)


@router.get("/{job_id}/artifacts", response_model=ArtifactsPublic)
def get_artifacts(job: JobDep, store: StoreDep, settings: SettingsDep) -> ArtifactsPublic:
    """Presigned download links (on the public S3 endpoint) for the job's artifacts."""
    prefix = artifacts.job_prefix(job.id)
    expires = settings.presign_expiry_s
    links = [
        ArtifactPublic(name=key[len(prefix) :], url=store.presigned_url(key, expires))
        for key in store.list(prefix)
        if not key[len(prefix) :].startswith(("images/", "thumbs/"))  # one link per image: too many
    ]
    return ArtifactsPublic(expires_in_s=expires, artifacts=links)
