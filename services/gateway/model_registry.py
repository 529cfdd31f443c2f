"""The model registry behind /v1/models: a tenant's models in object storage, checked by an
activation worker before they are recorded (the gateway has no torch).

A model is recorded only once its weights are stored and checked; a refused or failed upload
leaves nothing behind."""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from celery.exceptions import TimeoutError as NoAnswer

from neuron_atlas_client.contracts.api import ModelImport
from neuron_atlas_client.contracts.models import ModelLayers, ModelRecord, ModelSourceRecord, Preprocessing
from neuron_atlas_client.errors import InputError
from services.gateway.problems import RETRY_AFTER_S, Problem
from shared.jobs.queue import MODEL_CHECK, MODEL_IMPORT, get_app
from shared.models.model_names import check_allowed
from shared.models.registered_model import (
    MODEL_LAYERS,
    MODEL_RECORD,
    MODEL_WEIGHTS,
    JobModel,
    model_prefix,
    tenant_models_prefix,
)
from shared.models.safetensors_file import PickledWeights, SafetensorsSummary, check_safetensors
from shared.public_text import redact
from shared.storage.stores import S3Store, get_json, put_json

log = logging.getLogger(__name__)

# What a client sees of a worker's refusal: its kind maps to the problem type and status.
_REFUSAL_STATUS = {
    "unsupported-weights-format": 415,
    "model-source-unavailable": 503,
    "object-storage-unavailable": 503,
    "internal": 500,
}


def new_model_id() -> str:
    return uuid.uuid4().hex


def weights_too_large(limit: int) -> Problem:
    return Problem(
        413,
        "content-too-large",
        f"The weights file is larger than {limit:,} bytes.",
        fix="Ask the operator to raise GATEWAY_MAX_MODEL_BYTES, or import the model from your "
        "bucket area (POST /v1/models with a JSON body).",
    )


def stage_upload(source: IO[bytes], limit: int, folder: Path) -> tuple[Path, str, int]:
    """Copy the uploaded file to `folder`, hashing it; 413 past `limit` bytes."""
    path, digest, size = folder / "model.safetensors", hashlib.sha256(), 0
    with path.open("wb") as out:
        while chunk := source.read(1 << 20):
            size += len(chunk)
            if size > limit:
                raise weights_too_large(limit)
            digest.update(chunk)
            out.write(chunk)
    return path, digest.hexdigest(), size


def check_header(path: Path, file_name: str, max_parameters: int) -> SafetensorsSummary:
    """Refuse pickles (415), truncated or malformed files (422) and models over the tenant's
    parameter cap (422) before any worker sees them. Parses the caller's header under a size
    and depth cap (`shared.models.safetensors_file`): run it in a thread, never on the event loop."""
    try:
        summary = check_safetensors(path, file_name)
    except PickledWeights as exc:
        raise Problem(415, exc.kind, exc.problem, fix=exc.fix) from None
    except InputError as exc:
        raise Problem(422, "invalid-weights", exc.problem, fix=exc.fix) from None
    if summary.values > max_parameters:
        raise too_many_parameters(summary.values, max_parameters)
    return summary


def too_many_parameters(count: int, limit: int) -> Problem:
    return Problem(
        422,
        "model-too-large",
        "The model is larger than this deployment checks.",
        f"It holds {count:,} values; models of at most {limit:,} parameters are accepted.",
        fix="Register a smaller model, or ask the operator to raise GATEWAY_MAX_MODEL_PARAMETERS "
        "(and the activation workers' memory with it).",
    )


def check_hub_import(request: ModelImport, allowed: tuple[str, ...]) -> None:
    """A hub import names a repository the operator allows (ALLOWED_HUB_MODELS), like every hub
    id a caller gives: a worker downloads what it names."""
    if request.source.kind != "hub":
        return
    try:
        check_allowed("source.uri", request.source.uri, allowed)
    except InputError as exc:
        raise Problem(422, exc.kind, "The model cannot be imported.", exc.problem, exc.fix) from None


def ask_worker(task: str, args: list[Any], timeout_s: float) -> dict[str, Any]:
    """Send a check to an activation worker and wait for its answer (blocking: run it in a
    thread). A worker answers every outcome of a check as data (`{"ok"}` or `{"problem"}`), so
    an exception here is either no answer in time (503) or a worker that died mid-check (500)."""
    result = get_app().send_task(task, args=args)
    try:
        answer: dict[str, Any] = result.get(timeout=timeout_s, propagate=True)
    except NoAnswer:
        result.forget()
        raise Problem(
            503,
            "model-check-unavailable",
            "No activation worker checked the model in time.",
            f"The check did not finish within {timeout_s:.0f} s; nothing was kept.",
            fix="Try again shortly; if it persists, ask the operator whether activation workers run.",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        ) from None
    except Exception as exc:  # the task itself failed: the worker crashed or was killed
        result.forget()
        log.error("model check %s failed in the worker: %s", task, type(exc).__name__)
        raise Problem(
            500,
            "model-check-failed",
            "The model check failed in the worker.",
            "Nothing was kept.",
            fix="Try again; if it fails again, ask the operator to look at the activation workers' logs.",
        ) from None
    result.forget()
    return answer


def refusal(problem: dict[str, Any]) -> Problem:
    """A worker's refusal as the caller sees it: its text redacted of paths, hosts and addresses
    (a worker's messages may name its disk; a caller learns nothing of it)."""
    extra = {k: v for k, v in problem.items() if k not in ("kind", "problem", "fix")}
    status = _REFUSAL_STATUS.get(problem["kind"], 422)
    detail, fix = redact(problem["problem"]), redact(problem["fix"])
    if status == 503:  # the model's source or our storage did not answer: retry later
        retry = {"Retry-After": str(RETRY_AFTER_S)}
        title = (
            "Object storage is unavailable."
            if problem["kind"] == "object-storage-unavailable"
            else "The model could not be fetched."
        )
        return Problem(status, problem["kind"], title, detail, fix, headers=retry)
    if status == 500:
        return Problem(status, problem["kind"], "The model check failed.", detail, fix)
    return Problem(status, problem["kind"], "The model was refused.", detail, fix, **extra)


def register_upload(
    store: S3Store,
    tenant: str,
    staged: Path,
    sha256: str,
    size: int,
    file_name: str,
    architecture: str,
    num_classes: int | None,
    class_names: list[str] | None,
    preprocessing: Preprocessing | None,
    timeout_s: float,
    max_parameters: int,
) -> ModelRecord:
    model_id = new_model_id()
    prefix = model_prefix(tenant, model_id)
    try:
        store.put_file(prefix + MODEL_WEIGHTS, staged)
        answer = ask_worker(
            MODEL_CHECK,
            [prefix + MODEL_WEIGHTS, architecture, num_classes, _plain(preprocessing), max_parameters],
            timeout_s,
        )
        if "problem" in answer:
            raise refusal(answer["problem"])
        source = ModelSourceRecord(kind="upload", file_name=file_name)
        return _record(store, prefix, model_id, answer["ok"], sha256, size, source, class_names)
    except BaseException:
        store.delete_prefix(prefix)
        raise


def register_import(
    store: S3Store,
    tenant: str,
    request: ModelImport,
    timeout_s: float,
    max_parameters: int,
    allowed_hub_models: tuple[str, ...],
) -> ModelRecord:
    check_hub_import(request, allowed_hub_models)  # `..` and non-MLflow URIs: refused by the contract
    model_id = new_model_id()
    prefix = model_prefix(tenant, model_id)
    try:
        answer = ask_worker(
            MODEL_IMPORT,
            [
                tenant,
                request.source.model_dump(),
                prefix + MODEL_WEIGHTS,
                request.architecture,
                request.num_classes,
                _plain(request.preprocessing),
                max_parameters,
            ],
            timeout_s,
        )
        if "problem" in answer:
            raise refusal(answer["problem"])
        found = answer["ok"]
        source = ModelSourceRecord(
            kind=request.source.kind, uri=request.source.uri, file_name=found["file_name"]
        )
        return _record(
            store, prefix, model_id, found, found["sha256"], found["size_bytes"], source, request.class_names
        )
    except BaseException:
        store.delete_prefix(prefix)
        raise


def _plain(preprocessing: Preprocessing | None) -> dict[str, Any] | None:
    return preprocessing.document() if preprocessing else None


def _record(
    store: S3Store,
    prefix: str,
    model_id: str,
    checked: dict[str, Any],
    sha256: str,
    size: int,
    source: ModelSourceRecord,
    class_names: list[str] | None,
) -> ModelRecord:
    if class_names is not None and len(class_names) != checked["num_classes"]:
        raise Problem(
            422,
            "invalid-input",
            f"class_names has {len(class_names)} names for a head of {checked['num_classes']} outputs.",
            fix="Give one name per output, in the order of the outputs.",
        )
    record = ModelRecord(
        id=model_id,
        architecture=checked["architecture"],
        num_classes=checked["num_classes"],
        class_names=class_names,
        preprocessing=Preprocessing.model_validate(checked["preprocessing"]),
        sha256=sha256,
        parameters=checked["parameters"],
        size_bytes=size,
        source=source,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        warnings=checked.get("warnings") or None,
    )
    layers = ModelLayers.model_validate({**checked["layers"], "model_id": model_id})
    put_json(store, prefix + MODEL_LAYERS, layers.document())
    put_json(store, prefix + MODEL_RECORD, record.document())  # last: its presence means "registered"
    return record


def get_record(store: S3Store, tenant: str, model_id: str) -> ModelRecord:
    """The tenant's model; 404 for a model that is not theirs or does not exist."""
    key = model_prefix(tenant, model_id) + MODEL_RECORD
    try:
        return ModelRecord.model_validate(get_json(store, key))
    except FileNotFoundError:
        raise Problem(
            404, "not-found", f"No model {model_id}.", fix="GET /v1/models lists your models."
        ) from None


def get_layers(store: S3Store, tenant: str, model_id: str) -> ModelLayers:
    get_record(store, tenant, model_id)
    return ModelLayers.model_validate(get_json(store, model_prefix(tenant, model_id) + MODEL_LAYERS))


def list_records(
    store: S3Store, tenant: str, page_size: int, after: str | None
) -> tuple[list[ModelRecord], str | None]:
    """One page of the tenant's models, in id order; the cursor is the last id on the page."""
    prefix = tenant_models_prefix(tenant)
    ids = sorted(
        {
            key[len(prefix) :].split("/", 1)[0]
            for key in store.list(prefix)
            if key.endswith("/" + MODEL_RECORD)
        }
    )
    if after is not None:
        ids = [i for i in ids if i > after]
    page = ids[:page_size]
    records = [get_record(store, tenant, i) for i in page]
    return records, (page[-1] if len(ids) > page_size else None)


def delete_model(store: S3Store, tenant: str, model_id: str) -> None:
    get_record(store, tenant, model_id)
    store.delete_prefix(model_prefix(tenant, model_id))


def job_model_for(store: S3Store, tenant: str, model_id: str) -> JobModel:
    record = get_record(store, tenant, model_id)
    return JobModel(record=record, weights_key=model_prefix(tenant, model_id) + MODEL_WEIGHTS)


def scratch() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="neuron-atlas-upload-")


def parse_json_field(name: str, text: str | None) -> Any:
    if text is None or text == "":
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise Problem(422, "invalid-input", f"The `{name}` field is not JSON ({exc.msg}).") from None
