"""Celery tasks that check and import models for the registry (POST /v1/models). The gateway
waits for their answer: `{"ok": {...}}` with what the registry records, or `{"problem": {...}}`
with what was wrong. Run on the activation queue: its workers have torch and the model zoos."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.activation.model_check import check_model, problem_of
from services.activation.model_import import from_bucket, from_hub, from_mlflow, scratch_folder
from shared.contracts.models import Preprocessing
from shared.errors import NeuronAtlasError
from shared.queue import MODEL_CHECK, MODEL_IMPORT, get_app
from shared.safetensors_file import check_safetensors, file_sha256
from shared.settings import get_infra_settings
from shared.tasks import object_store


def _answer(work: Any) -> dict[str, Any]:
    try:
        return {"ok": work()}
    except NeuronAtlasError as exc:
        return {"problem": problem_of(exc)}


@get_app().task(name=MODEL_CHECK)
def model_check(
    weights_key: str, architecture: str, num_classes: int | None, preprocessing: dict[str, Any] | None
) -> dict[str, Any]:
    """Check weights the gateway has already stored at `weights_key`."""
    prep = Preprocessing.model_validate(preprocessing) if preprocessing else None
    with scratch_folder() as folder:
        path = Path(folder) / "model.safetensors"
        object_store().get_file(weights_key, path)
        return _answer(lambda: check_model(path, architecture, num_classes, prep))


@get_app().task(name=MODEL_IMPORT)
def model_import(
    tenant: str,
    source: dict[str, str],
    weights_key: str,
    architecture: str,
    num_classes: int | None,
    preprocessing: dict[str, Any] | None,
) -> dict[str, Any]:
    """Fetch the weights from `source`, check them, and store them at `weights_key`."""
    prep = Preprocessing.model_validate(preprocessing) if preprocessing else None
    store = object_store()

    def work(folder: Path) -> dict[str, Any]:
        kind, uri = source["kind"], source["uri"]
        if kind == "bucket":
            path = from_bucket(store, f"imports/{tenant}/{uri.lstrip('/')}", folder)
        elif kind == "mlflow":
            path = from_mlflow(uri, get_infra_settings().mlflow_tracking_uri, folder)
        else:
            path = from_hub(uri, folder)
        check_safetensors(path)
        result = check_model(path, architecture, num_classes, prep)
        store.put_file(weights_key, path)
        return {
            **result,
            "sha256": file_sha256(path),
            "size_bytes": path.stat().st_size,
            "file_name": path.name,
        }

    with scratch_folder() as folder:
        return _answer(lambda: work(Path(folder)))
