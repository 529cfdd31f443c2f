"""Fetch a model's safetensors file for the registry from where it lives: the tenant's own area of
the bucket, an MLflow model URI (`models:/name/version`, `runs:/id/path`) on the tracking server the
deployment configures, or a Hugging Face hub repository where a hub can be reached."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TypeVar

from neuron_atlas_client.contracts.api import MLFLOW_URI_PATTERN
from neuron_atlas_client.errors import InputError, ModelLoadError
from shared.models.hub import downloads_allowed
from shared.models.model_names import check_allowed
from shared.storage.stores import S3Store

P = TypeVar("P", Path, str)


class ImportFailed(ModelLoadError):
    kind = "model-import-failed"


class SourceUnavailable(ModelLoadError):
    """The tracking server or hub did not answer: worth trying again later (503)."""

    kind = "model-source-unavailable"


def only_safetensors(paths: Sequence[P], where: str) -> list[P]:
    """Exactly one .safetensors file (model.safetensors preferred), or an error saying what to do."""
    files = [p for p in paths if str(p).endswith(".safetensors")]
    preferred = [p for p in files if str(p).rsplit("/", 1)[-1] == "model.safetensors"]
    chosen = preferred or files
    if len(chosen) == 1:
        return chosen
    if not chosen:
        raise ImportFailed(
            f"{where} holds no .safetensors file.",
            "Store the state dict as model.safetensors (pickled checkpoints are never loaded).",
        )
    raise ImportFailed(
        f"{where} holds {len(chosen)} .safetensors files and none is named model.safetensors.",
        "Name the one to import model.safetensors, or point at a prefix that holds only it.",
    )


def from_bucket(store: S3Store, prefix: str, folder: Path) -> Path:
    keys = list(store.list(prefix))
    (key,) = only_safetensors(keys, f"The bucket prefix {prefix}")
    path = folder / "model.safetensors"
    store.get_file(str(key), path)
    return path


def from_mlflow(uri: str, tracking_uri: str | None, folder: Path) -> Path:
    # The gateway takes only these (neuron_atlas_client.contracts.api); checked again here, because MLflow
    # would read a file:// URI or a path with this worker's rights.
    if not re.fullmatch(MLFLOW_URI_PATTERN, uri) or ".." in uri.split("/"):
        raise InputError(
            "An MLflow import takes models:/NAME/VERSION or runs:/RUN_ID/PATH only.",
            "Name a registered model version or a run's artifact.",
        )
    if not tracking_uri:
        raise ImportFailed(
            "This deployment has no MLflow tracking server configured.",
            "Ask the operator to set MLFLOW_TRACKING_URI on the activation workers, or upload the file.",
        )
    # Bounded: a tracking server that does not answer fails the import within about a minute,
    # not after MLflow's default retries (minutes), while the gateway waits. Overridable.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    # mlflow: an optional extra, and it reads the two settings above when imported
    import mlflow
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    # models:/ URIs resolve through the model registry, whose URI is not the tracking URI
    # argument below: without this they would be looked up in a local database.
    mlflow.set_registry_uri(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)  # else MLflow 3 opens a local mlflow.db in the cwd

    try:
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=str(folder), tracking_uri=tracking_uri
            )
        )
    except MlflowException as exc:
        if "failed with exception" in exc.message:  # no answer; its text names hosts: not shown
            raise SourceUnavailable(
                "The MLflow tracking server did not answer.",
                "Try again later; if it persists, ask the operator to check MLFLOW_TRACKING_URI.",
            ) from None
        raise InputError(
            f"MLflow could not resolve {uri!r}: {exc.message[:300]}",
            "Check the model name and version (models:/NAME/VERSION) or the run id (runs:/ID/PATH).",
        ) from None
    except OSError as exc:
        raise SourceUnavailable(
            f"The MLflow tracking server did not answer ({type(exc).__name__}).",
            "Try again later, or upload the file.",
        ) from None
    files = sorted(local.rglob("*.safetensors")) if local.is_dir() else [local]
    (path,) = only_safetensors(files, f"The MLflow model {uri}")
    return Path(path)


def from_hub(repo_id: str, folder: Path, allowed: Collection[str] | None = None) -> Path:
    """`allowed`: the hub ids the deployment allows (checked by the gateway too); None: any."""
    if allowed is not None:
        check_allowed("source.uri", repo_id, allowed)
    if not downloads_allowed():
        raise ImportFailed(
            f"The model hub cannot be reached from this deployment (downloads are off) for {repo_id!r}.",
            "Download model.safetensors yourself and upload it, or import it from your bucket.",
        )
    # huggingface_hub: only imports from the hub need it, not every activation worker's start
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return Path(hf_hub_download(repo_id, "model.safetensors", cache_dir=str(folder)))
    except HfHubHTTPError as exc:
        raise InputError(
            f"The hub has no model.safetensors in {repo_id!r} ({exc}).", "Check the repository id."
        ) from None
    except OSError as exc:
        raise SourceUnavailable(
            f"The model hub did not answer for {repo_id!r} ({type(exc).__name__}).",
            "Upload the file instead, or import it from your bucket.",
        ) from None


def scratch_folder() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="neuron-atlas-model-")
