"""`neuron-atlas run` and `relabel` with a real OpenAI-compatible endpoint on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from neuron_atlas.cli import main
from neuron_atlas_client.contracts.hierarchy import SCHEMA_VERSION
from services.labelling.settings import get_settings
from shared.pipeline.hierarchy import validate_hierarchy
from tests.services.labelling.fake_llm import FakeLLM


@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    server = FakeLLM().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def finished(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A result labelled offline (no endpoint in the environment)."""
    out = tmp_path_factory.mktemp("relabel") / "out"
    get_settings.cache_clear()
    # uncertainty model passes at about their cost before schema 1.3: this test is about labels
    light = ["--ablation-random-sets", "8", "--tta-samples", "0", "--pruning-thresholds", "0.05"]
    assert main(["-q", "run", str(sample_dir), "--out", str(out), "--allow-random-weights", *light]) == 0
    return out


def read(out: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((out / "hierarchy.json").read_text())
    return document


def untouched(out: Path) -> dict[str, int]:
    """Modification times of what relabel must not recompute."""
    keys = ["embeddings.npy", "partitions.npy", "groups.json", *(p.name for p in out.glob("activations/*"))]
    return {k: (out / k if (out / k).exists() else out / "activations" / k).stat().st_mtime_ns for k in keys}


def test_run_without_endpoint_records_offline_labels(finished: Path) -> None:
    document = read(finished)
    assert document["schema_version"] == SCHEMA_VERSION
    assert document["labelling"]["source"] == "offline"
    assert {c["label_source"] for c in document["clusters"]} == {"offline"}
    assert document["labelling"]["quality"]["clusters_scored"] > 0


def test_relabel_uses_the_endpoint_and_reuses_everything_else(
    finished: Path, fake_llm: FakeLLM, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = untouched(finished)
    images_before = read(finished)["images"]
    argv = ["relabel", str(finished), "--llm-base-url", fake_llm.url, "--llm-model", "fake-model"]
    argv += ["--label-cache", str(tmp_path / "cache")]
    assert main(argv) == 0
    document = read(finished)
    validate_hierarchy(document)
    clusters = document["clusters"]
    assert {c["label_source"] for c in clusters} == {"llm:fake-model@v1"}
    assert all(c["label"].startswith(("scenes like", "kinds of")) for c in clusters)
    assert document["labelling"]["accounting"]["requests"] == fake_llm.requests == len(clusters)
    assert document["labelling"]["accounting"]["prompt_tokens"] == fake_llm.tokens()[0]
    assert document["images"] == images_before
    assert untouched(finished) == before
    assert "labels: " in capsys.readouterr().err

    # Again with the same settings: every answer from the cache, nothing sent.
    assert main(argv) == 0
    assert fake_llm.requests == len(clusters)
    assert read(finished)["labelling"]["accounting"]["cache_hits"] == len(clusters)

    # And back to offline labels.
    assert main(["-q", "relabel", str(finished), "--offline-labels"]) == 0
    assert {c["label_source"] for c in read(finished)["clusters"]} == {"offline"}


def test_strict_relabel_against_a_failing_endpoint_exits_4(
    finished: Path, fake_llm: FakeLLM, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_llm.script.extend([("500",)] * 100)
    argv = ["-q", "relabel", str(finished), "--llm-base-url", fake_llm.url, "--strict-labels"]
    argv += ["--no-label-cache"]
    assert main(argv) == 4
    assert "labelling endpoint gave no label" in capsys.readouterr().err


def test_relabel_of_a_folder_without_a_result_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["relabel", str(tmp_path)]) == 2
    assert "finished run" in capsys.readouterr().err
