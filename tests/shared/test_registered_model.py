"""A worker's copy of a registered model's weights: fetched from S3 once, checked against the
sha256, the least recently used evicted beyond KEEP_FILES."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from neuron_atlas_client.contracts.models import IMAGENET_EVAL, ModelRecord, ModelSourceRecord
from neuron_atlas_client.errors import ModelLoadError
from shared.models.registered_model import KEEP_FILES, JobModel, local_weights
from shared.storage.stores import S3Store


@pytest.fixture(scope="module")
def bucket(s3_server: Any) -> str:
    name = f"models-{uuid.uuid4().hex[:12]}"  # one for the module: SeaweedFS's volumes are few
    s3_server.make_bucket(name)
    return name


@pytest.fixture
def store(s3_server: Any, bucket: str) -> S3Store:
    store = S3Store(s3_server.client(), bucket)
    store.delete_prefix("")
    return store


def stored_model(store: S3Store, data: bytes, sha256: str | None = None) -> JobModel:
    model_id = uuid.uuid4().hex
    key = f"models/t/{model_id}/weights.safetensors"
    store.put_bytes(key, data)
    record = ModelRecord(
        id=model_id,
        architecture="resnet18",
        num_classes=2,
        preprocessing=IMAGENET_EVAL,
        sha256=sha256 or hashlib.sha256(data).hexdigest(),
        parameters=1,
        size_bytes=len(data),
        source=ModelSourceRecord(kind="upload"),
        created_at="2026-11-26T00:00:00+00:00",
    )
    return JobModel(record=record, weights_key=key)


def test_weights_are_fetched_once_and_kept_under_their_sha256(store: S3Store, tmp_path: Path) -> None:
    model = stored_model(store, b"weights-one")
    path = local_weights(store, model, tmp_path)
    assert path.name == f"{model.record.sha256}.safetensors" and path.read_bytes() == b"weights-one"
    store.delete_prefix("models/")  # a second use must not need S3
    assert local_weights(store, model, tmp_path) == path


def test_a_copy_unlike_its_sha256_is_refused_and_not_kept(store: S3Store, tmp_path: Path) -> None:
    model = stored_model(store, b"tampered", sha256="0" * 64)
    with pytest.raises(ModelLoadError, match="do not match their sha256"):
        local_weights(store, model, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_deleted_model_says_so(store: S3Store, tmp_path: Path) -> None:
    model = stored_model(store, b"gone")
    store.delete_prefix("models/")
    with pytest.raises(ModelLoadError, match="gone from object storage"):
        local_weights(store, model, tmp_path)


def test_only_the_most_recently_used_files_are_kept(store: S3Store, tmp_path: Path) -> None:
    models = [stored_model(store, f"weights-{i}".encode()) for i in range(KEEP_FILES + 2)]
    paths = []
    for age, model in enumerate(models):
        paths.append(local_weights(store, model, tmp_path))
        os.utime(paths[-1], (1000 + age, 1000 + age))  # distinct times, oldest first
    assert sorted(tmp_path.iterdir()) == sorted(paths[-KEEP_FILES:])
