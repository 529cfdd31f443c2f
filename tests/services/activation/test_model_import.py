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
