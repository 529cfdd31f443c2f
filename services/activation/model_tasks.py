"""Celery tasks that check and import models for the registry (POST /v1/models). The gateway
waits for their answer: `{"ok": {...}}` with what the registry records, or `{"problem": {...}}`
with what was wrong. Every outcome is an answer, never an exception, so the gateway can tell a
bad model (422) from object storage that is down (503) and from a check that never ran (503,
timeout). Run on the activation queue: its workers have torch and the model zoos."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from neuron_atlas_client.contracts.models import Preprocessing
from neuron_atlas_client.errors import NeuronAtlasError
from services.activation.model_check import check_model, problem_of
from services.activation.model_import import from_bucket, from_hub, from_mlflow, scratch_folder
from services.activation.settings import ActivationSettings
from shared.jobs.dependencies import unavailable_dependency
from shared.jobs.queue import MODEL_CHECK, MODEL_IMPORT, get_app
from shared.jobs.tasks import object_store
from shared.models.safetensors_file import file_sha256
from shared.settings import get_infra_settings

log = logging.getLogger(__name__)


def _answer(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return {"ok": work()}
    except NeuronAtlasError as exc:
        return {"problem": problem_of(exc)}
    except Exception as exc:
        if (dependency := unavailable_dependency(exc)) is not None:
            log.warning("model check: %s unavailable (%s)", dependency.name, type(exc).__name__)
            return {
                "problem": {
                    "kind": f"{dependency.kind}-unavailable",
                    "problem": f"The check could not reach {dependency.name}; nothing was kept.",
                    "fix": "Try again shortly; if it persists, tell the operator (a full store "
                    "refuses writes too).",
                }
            }
        # Whatever else the user's file or architecture makes fail (a library's own error on
        # odd input) is still about that input: refused, with no text that could name a path.
        log.exception("model check failed")
        return {
            "problem": {
                "kind": "model-check-failed",
                "problem": f"The model could not be checked ({type(exc).__name__}).",
                "fix": "Check that the file is the state dict of the named architecture, saved by "
                "safetensors' save_file.",
            }
        }


def _cap(tenant_cap: int | None) -> int | None:
    """The tighter of the tenant's cap (from the gateway) and this worker's own."""
    caps = [c for c in (tenant_cap, ActivationSettings().max_model_parameters) if c is not None]
    return min(caps) if caps else None


@get_app().task(name=MODEL_CHECK)
def model_check(
    weights_key: str,
    architecture: str,
    num_classes: int | None,
    preprocessing: dict[str, Any] | None,
    max_parameters: int | None = None,
) -> dict[str, Any]:
    """Check weights the gateway has already stored at `weights_key`."""

    def work() -> dict[str, Any]:
        prep = Preprocessing.model_validate(preprocessing) if preprocessing else None
        with scratch_folder() as folder:
            path = Path(folder) / "model.safetensors"
            object_store().get_file(weights_key, path)
            return check_model(path, architecture, num_classes, prep, _cap(max_parameters))

    return _answer(work)


@get_app().task(name=MODEL_IMPORT)
def model_import(
    tenant: str,
    source: dict[str, str],
    weights_key: str,
    architecture: str,
    num_classes: int | None,
    preprocessing: dict[str, Any] | None,
    max_parameters: int | None = None,
) -> dict[str, Any]:
    """Fetch the weights from `source`, check them, and store them at `weights_key`."""

    def work() -> dict[str, Any]:
        prep = Preprocessing.model_validate(preprocessing) if preprocessing else None
        store = object_store()
        with scratch_folder() as name:
            folder = Path(name)
            kind, uri = source["kind"], source["uri"]
            if kind == "bucket":
                path = from_bucket(store, f"imports/{tenant}/{uri.lstrip('/')}", folder)
            elif kind == "mlflow":
                path = from_mlflow(uri, get_infra_settings().mlflow_tracking_uri, folder)
            else:
                path = from_hub(uri, folder, get_infra_settings().allowed_hub_models)
            result = check_model(path, architecture, num_classes, prep, _cap(max_parameters), path.name)
            store.put_file(weights_key, path)
            return {
                **result,
                "sha256": file_sha256(path),
                "size_bytes": path.stat().st_size,
                "file_name": path.name,
            }

    return _answer(work)
