"""Job submission: images into object storage, spec and manifest beside them, the job record,
and only then the canvas on the queue. Blocking code: the router runs it in a worker thread."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from neuron_atlas_client.contracts.api import JobFromBucket, JobSpec
from neuron_atlas_client.errors import InputError
from neuron_atlas_client.options import PipelineOptions
from services.gateway.settings import GatewaySettings, Quota
from services.gateway.uploads import Collector, Limits
from shared.jobs.jobstore import JobRecord, JobStore
from shared.models.registered_model import JOB_ARTIFACT, JobModel
from shared.pipeline import stages
from shared.pipeline.model_view import write_model_specs
from shared.storage import artifacts
from shared.storage.stores import PrefixedStore, Store, put_json

log = logging.getLogger(__name__)

Upload = tuple[str, IO[bytes]]  # (file name, seekable file)


class EnqueueFailed(Exception):
    pass


def new_job_id() -> str:
    return uuid.uuid4().hex


def limits_of(settings: GatewaySettings, quota: Quota) -> Limits:
    return Limits(
        quota.max_images_per_job,  # the tenant's quota, never above the deployment's limit
        settings.max_image_pixels,
        settings.max_archive_entries,
        settings.max_expanded_bytes,
        settings.max_file_bytes,
    )


def fingerprint(document: Any, uploads: Sequence[Upload] = ()) -> str:
    """What a submission *means*: its spec and the names and bytes of its files, so the same
    request sent again (with another multipart boundary) has the same fingerprint."""
    digest = hashlib.sha256(json.dumps(document, sort_keys=True).encode())
    for name, handle in uploads:
        part = hashlib.sha256()
        handle.seek(0)
        while chunk := handle.read(1 << 20):
            part.update(chunk)
        handle.seek(0)
        digest.update(f"\n{name}\n{part.hexdigest()}".encode())
    return digest.hexdigest()


def collect_uploads(
    view: Store, uploads: Sequence[Upload], options: PipelineOptions, limits: Limits
) -> Collector:
    collector = Collector(limits, options.max_image_pixels)
    try:
        for name, handle in uploads:
            collector.add_upload(name, handle)
    except BaseException:
        collector.close()
        raise
    return collector


def import_prefix(store: Store, view: Store, tenant: str, spec: JobFromBucket, limits: Limits) -> Collector:
    """Images already in the bucket, under the tenant's own `imports/{tenant}/` prefix."""
    allowed = f"imports/{tenant}/"
    prefix = spec.source.prefix if spec.source.prefix.endswith("/") else spec.source.prefix + "/"
    if not prefix.startswith(allowed) or ".." in prefix.split("/"):
        raise InputError(
            f"Prefix {spec.source.prefix!r} is outside {allowed}.", f"Put the images under {allowed}."
        )
    collector = Collector(limits, spec.options.max_image_pixels)
    try:
        for key in store.list(prefix):
            collector.add_file(key[len(prefix) :], store.get_bytes(key))
    except BaseException:
        collector.close()
        raise
    return collector


def submit(
    store: Store,
    jobs: JobStore,
    tenant: str,
    spec: JobSpec,
    collect: Callable[[Store], Collector],
    enqueue: Callable[[str, int, int], None],
    job_id: str,
    llm_token_budget: int | None = None,
    model: JobModel | None = None,
    models: Mapping[str, JobModel] | None = None,
) -> JobRecord:
    """Ingest, record, enqueue; a refused submission leaves no objects behind. `model`: the job's
    registered model; `models`: a multi-model job's, by key, each written into its own folder."""
    view = PrefixedStore(store, artifacts.job_prefix(job_id))
    options = spec.options
    try:
        with collect(view) as collector:  # its spool goes when the images are written
            manifest = collector.manifest(spec.captions, spec.labels)
            collector.write_shards(view.put_file, manifest, options.shard_size)
        # The same two documents the embedded ingest writes, so both runs give one hierarchy.
        put_json(view, artifacts.SPEC, {"options": options.model_dump(mode="json")})
        put_json(view, artifacts.MANIFEST, manifest)
        if model is not None:  # the registered model, as the workers will load it
            put_json(view, JOB_ARTIFACT, model.model_dump(mode="json"))
        if options.multi_model:
            write_model_specs(view, options)
        for key, registered in (models or {}).items():
            put_json(view, artifacts.model_prefix(key) + JOB_ARTIFACT, registered.model_dump(mode="json"))
    except BaseException:
        store.delete_prefix(artifacts.job_prefix(job_id))
        raise
    images = len(manifest["images"])
    shards = artifacts.shard_count(images, options.shard_size)
    count = len(options.target_models())
    totals = stages.totals(images, count)
    callbacks = [c.model_dump(mode="json") for c in spec.callbacks]
    try:
        record = jobs.create(
            job_id, tenant, images, len(manifest["skipped"]), shards, totals, callbacks, llm_token_budget
        )
        jobs.shard_done(job_id, "ingest", 0, images)
    except BaseException:
        # Redis went away: no record, so no objects either (the caller gets a 503 and retries).
        store.delete_prefix(artifacts.job_prefix(job_id))
        jobs.delete_quietly(job_id)
        raise
    try:
        enqueue(job_id, shards, count)
    except Exception as exc:
        log.warning("could not enqueue job %s: %s", job_id, type(exc).__name__)
        # Nothing half-made stays behind: the caller is told to submit again.
        store.delete_prefix(artifacts.job_prefix(job_id))
        jobs.delete_quietly(job_id)
        raise EnqueueFailed(type(exc).__name__) from exc
    return jobs.get(job_id) or record
