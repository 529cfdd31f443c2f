"""Fixtures of the labelling tests: the fake endpoint, a real sentence embedder, a small job."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from neuron_atlas_client.options import PipelineOptions
from services.labelling.settings import LabelSettings
from shared.models.sentence_embedder import Embedder
from shared.storage import artifacts
from shared.storage.stores import LocalStore, put_json, put_npy
from tests.services.labelling.fake_llm import FakeLLM

# Four concepts of three images; level 2 pairs them: animals (dogs, cats), vehicles (cars, boats).
CAPTIONS = [
    "a brown dog running on the grass",
    "a dog playing with a ball on the lawn",
    "a small dog sitting on green grass",
    "a cat sleeping on a sofa",
    "a grey cat lying on the couch",
    "a cat curled up on a cushion",
    "a red car parked on a city street",
    "a blue car driving down the road",
    "a car stopped at a traffic light",
    "a sailing boat on a calm lake",
    "a small boat floating on the water",
    "a rowing boat tied at the lake shore",
]
PARTITIONS = np.array([[i // 3, i // 6] for i in range(12)], dtype=np.int32)


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    model = Embedder()
    model.load()
    return model


@pytest.fixture(scope="session")
def caption_vectors(embedder: Embedder) -> np.ndarray:
    return embedder.embed(CAPTIONS)


@pytest.fixture
def job_store(tmp_path: Path, caption_vectors: np.ndarray) -> LocalStore:
    """A job's store holding what the labelling stage reads."""
    store = LocalStore(tmp_path / "job")
    put_json(store, artifacts.SPEC, {"options": PipelineOptions().model_dump(mode="json")})
    put_npy(store, artifacts.EMBEDDINGS, caption_vectors)
    put_npy(store, artifacts.PARTITIONS, PARTITIONS)
    return store


@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    server = FakeLLM().start()
    yield server
    server.stop()


@pytest.fixture
def llm_settings(fake_llm: FakeLLM, tmp_path: Path) -> LabelSettings:
    """Settings against the fake endpoint: short timeout and backoff, a fresh cache."""
    return LabelSettings(
        base_url=fake_llm.url,
        api_key="test-key",  # type: ignore[arg-type]
        organization="org-test",
        model="fake-model",
        timeout=0.5,
        max_retries=2,
        backoff_base=0.01,
        concurrency=2,
        cache_dir=tmp_path / "cache",
    )
