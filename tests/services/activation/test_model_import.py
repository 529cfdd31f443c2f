"""Model imports when their source fails: a clear error that names no host."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.activation.model_import import (
    ImportFailed,
    SourceUnavailable,
    from_hub,
    from_mlflow,
    only_safetensors,
)
from tests.servers import free_port


@pytest.fixture
def mlflow_uris_reset() -> Iterator[None]:
    """from_mlflow sets MLflow's process-wide tracking and registry URIs (a worker serves one
    deployment); unset them after, or later MLflow clients in this test process would use them."""
    import mlflow

    yield
    mlflow.set_registry_uri(None)
    mlflow.set_tracking_uri(None)


@pytest.mark.usefixtures("mlflow_uris_reset")
def test_an_mlflow_server_that_does_not_answer_is_unavailable_and_unnamed(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(SourceUnavailable) as err:
        from_mlflow("models:/planted/1", f"http://127.0.0.1:{port}", tmp_path)
    assert "127.0.0.1" not in str(err.value) and str(port) not in str(err.value)
    assert not list(tmp_path.iterdir())


def test_no_tracking_server_configured_says_who_can_fix_it(tmp_path: Path) -> None:
    with pytest.raises(ImportFailed, match="MLFLOW_TRACKING_URI"):
        from_mlflow("models:/planted/1", None, tmp_path)


def test_a_hub_import_with_downloads_off_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEURON_ATLAS_OFFLINE", "1")
    with pytest.raises(ImportFailed, match="upload it"):
        from_hub("timm/resnet18.a1_in1k", tmp_path)


def test_one_safetensors_file_is_chosen_or_the_choice_is_explained() -> None:
    assert only_safetensors(["a/config.json", "a/model.safetensors", "a/extra.safetensors"], "x") == [
        "a/model.safetensors"
    ]
    assert only_safetensors(["a/weights.safetensors"], "x") == ["a/weights.safetensors"]
    with pytest.raises(ImportFailed, match=r"no \.safetensors"):
        only_safetensors(["a/model.pt"], "x")
    with pytest.raises(ImportFailed, match=r"2 \.safetensors files"):
        only_safetensors(["a/one.safetensors", "a/two.safetensors"], "x")


@pytest.fixture
def development_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The task module builds the process-wide Celery app from the environment."""
    from shared.jobs import queue
    from shared.settings import get_infra_settings

    monkeypatch.setenv("ENVIRONMENT", "development")
    get_infra_settings.cache_clear()
    queue.get_app.cache_clear()
    yield
    get_infra_settings.cache_clear()
    queue.get_app.cache_clear()


@pytest.mark.usefixtures("development_app")
def test_a_check_answers_every_failure_as_data_a_caller_can_act_on() -> None:
    """A worker's answer says what went wrong, never raises: storage that refuses (a full store)
    is a 503 to retry, any other failure on the caller's file a 422, and neither names a path."""
    import urllib3
    from minio.error import S3Error

    from services.activation.model_tasks import _answer
    from services.gateway.model_registry import refusal

    def full_store() -> dict[str, object]:
        raise S3Error(
            None,
            "XMinioStorageFull",
            "Storage backend has reached its minimum free drive threshold.",
            "/b/k",
            "r",
            "h",
        )  # type: ignore[arg-type]

    def no_store() -> dict[str, object]:
        raise urllib3.exceptions.MaxRetryError(None, "/tmp/x", "HTTPConnectionPool(host='minio', port=9000)")  # type: ignore[arg-type]

    def odd_input() -> dict[str, object]:
        raise RecursionError(
            "maximum recursion depth exceeded in /tmp/neuron-atlas-model-1/model.safetensors"
        )

    for work in (full_store, no_store):
        problem = refusal(_answer(work)["problem"])
        assert problem.status == 503 and problem.kind == "object-storage-unavailable"
        assert "Retry-After" in problem.headers
    problem = refusal(_answer(odd_input)["problem"])
    assert problem.status == 422 and problem.kind == "model-check-failed"
    assert "/tmp" not in f"{problem.title} {problem.detail} {problem.fix}"
