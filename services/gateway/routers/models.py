"""`/v1/models`: a tenant's own models: upload or import, list, describe, layers, delete."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from neuron_atlas_client.contracts.api import ModelImport, ModelsPublic
from neuron_atlas_client.contracts.models import ModelLayers, ModelRecord
from services.gateway import model_registry as registry
from services.gateway.deps import ServicesDep, StoreDep, TenantDep
from services.gateway.limits import MULTIPART_OVERHEAD_BYTES
from services.gateway.problems import Problem
from services.gateway.submission import MAX_JSON_BYTES, bounded_body, parse_json

router = APIRouter(prefix="/v1/models", tags=["models"])

MODEL_ID = r"^[0-9a-f]{32}$"

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["weights", "architecture"],
                    "additionalProperties": False,
                    "properties": {
                        "weights": {
                            "type": "string",
                            "format": "binary",
                            "description": "A .safetensors state dict (pickles are refused).",
                        },
                        "architecture": {"type": "string", "description": "torchvision:NAME or timm:NAME"},
                        "num_classes": {"type": "integer", "minimum": 1},
                        "class_names": {"type": "string", "description": "JSON array, one name per output"},
                        "preprocessing": {"type": "string", "description": "JSON object (Preprocessing)"},
                    },
                }
            },
            "application/json": {"schema": ModelImport.model_json_schema()},
        },
    }
}


@router.post("", status_code=201, response_model=ModelRecord, openapi_extra=UPLOAD_BODY)
async def create_model(
    request: Request, response: Response, tenant: TenantDep, services: ServicesDep
) -> ModelRecord:
    """Register a model: upload its safetensors file (multipart) or import it (JSON) from your
    bucket area, an MLflow model URI or a hub id. It is checked before it is recorded: the state
    dict must load strictly and the model must run on a sample image."""
    settings, store = services.settings, services.store
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        body = await bounded_body(request, MAX_JSON_BYTES)
        parse_json(body)  # not UTF-8 JSON of sane depth: a 422 that says so
        try:
            wanted = ModelImport.model_validate_json(body, strict=True)
        except ValidationError as exc:
            raise _invalid(exc) from None
        record = await run_in_threadpool(
            registry.register_import,
            store,
            tenant,
            wanted,
            settings.model_check_timeout_s,
            settings.quota(tenant).max_model_parameters,
            services.infra.allowed_hub_models,
        )
    elif content_type.startswith("multipart/form-data"):
        record = await _upload(request, tenant, services)
    else:
        raise Problem(
            415,
            "unsupported-media-type",
            "Send multipart/form-data (an upload) or application/json (an import).",
            headers={"Accept-Post": "multipart/form-data, application/json"},
        )
    response.headers["Location"] = f"/v1/models/{record.id}"
    return record


async def _upload(request: Request, tenant: str, services: Any) -> ModelRecord:
    settings = services.settings
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > settings.max_model_bytes + MULTIPART_OVERHEAD_BYTES:
        raise registry.weights_too_large(settings.max_model_bytes)
    form = await request.form(max_files=1, max_fields=10, max_part_size=1024 * 1024)
    try:
        weights = form.get("weights")
        if not isinstance(weights, UploadFile):
            raise Problem(
                422,
                "invalid-input",
                "The `weights` file part is missing.",
                fix="Add -F weights=@model.safetensors.",
            )
        parts = {k: form.get(k) for k in ("architecture", "num_classes", "class_names", "preprocessing")}
        fields = {k: v for k, v in parts.items() if isinstance(v, str)}
        if len(fields) != sum(v is not None for v in parts.values()):
            raise Problem(422, "invalid-input", "Only `weights` may be a file part.")
        try:
            wanted = ModelImport.model_validate(
                {
                    "architecture": fields.get("architecture"),
                    "source": {"kind": "bucket", "uri": "-"},  # validates the other fields only
                    "num_classes": fields.get("num_classes") or None,
                    "class_names": registry.parse_json_field("class_names", fields.get("class_names")),
                    "preprocessing": registry.parse_json_field("preprocessing", fields.get("preprocessing")),
                }
            )
        except ValidationError as exc:
            raise _invalid(exc) from None
        file_name = Path(weights.filename or "model.safetensors").name
        max_parameters = settings.quota(tenant).max_model_parameters
        with registry.scratch() as folder:
            staged, sha256, size = await run_in_threadpool(
                registry.stage_upload, weights.file, settings.max_model_bytes, Path(folder)
            )
            # The header is the caller's JSON: parsed in a thread, under caps, never on the loop
            await run_in_threadpool(registry.check_header, staged, file_name, max_parameters)
            return await run_in_threadpool(
                registry.register_upload,
                services.store,
                tenant,
                staged,
                sha256,
                size,
                file_name,
                wanted.architecture,
                wanted.num_classes,
                wanted.class_names,
                wanted.preprocessing,
                settings.model_check_timeout_s,
                max_parameters,
            )
    finally:
        await form.close()


def _invalid(exc: ValidationError) -> Problem:
    errors = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
    shown = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
    return Problem(422, "invalid-input", "The model request is invalid.", shown, errors=errors)


@router.get("", response_model=ModelsPublic)
def list_models(
    tenant: TenantDep,
    store: StoreDep,
    page_size: int = Query(20, ge=1, le=100),
    page_token: str | None = Query(
        None, pattern=MODEL_ID, description="`next_page_token` of the previous page (a model id)."
    ),
) -> ModelsPublic:
    """The caller's models, in id order."""
    records, cursor = registry.list_records(store, tenant, page_size, page_token)
    return ModelsPublic(items=records, next_page_token=cursor)


@router.get("/{model_id}", response_model=ModelRecord)
def get_model(model_id: str, tenant: TenantDep, store: StoreDep) -> ModelRecord:
    """Architecture, head, preprocessing, sha256, parameter count and source of one model."""
    return registry.get_record(store, tenant, _checked_id(model_id))


@router.get("/{model_id}/layers", response_model=ModelLayers)
def get_model_layers(model_id: str, tenant: TenantDep, store: StoreDep) -> ModelLayers:
    """The layers a job can read (`options.layers`), their channels, and the default ones."""
    return registry.get_layers(store, tenant, _checked_id(model_id))


@router.delete("/{model_id}", status_code=204)
def delete_model(model_id: str, tenant: TenantDep, store: StoreDep) -> Response:
    """Remove the model and its weights; jobs that already ran keep their results."""
    registry.delete_model(store, tenant, _checked_id(model_id))
    return Response(status_code=204)


def _checked_id(model_id: str) -> str:
    if not re.fullmatch(MODEL_ID, model_id):
        raise Problem(404, "not-found", f"No model {model_id[:40]}.", fix="GET /v1/models lists your models.")
    return model_id
