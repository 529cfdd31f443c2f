"""A job failed by an unreachable dependency says which one, and never its address or keys."""

from __future__ import annotations

import json

import pytest
import redis

from shared.jobs.tasks import describe_error
from shared.storage.stores import make_s3_client
from tests.servers import free_port


def test_object_storage_down_is_named_without_host_port_or_key() -> None:
    port = free_port()  # nothing listens there
    client = make_s3_client(f"127.0.0.1:{port}", "AKIDSECRET", "s3cr3t", "us-east-1", 0.5, 0.5, 0)
    with pytest.raises(Exception) as caught:
        client.stat_object("bucket-name", "jobs/abc/captions/0.json")
    error = describe_error("caption", caught.value)
    text = json.dumps(error)
    assert error["type"].endswith(":object-storage-unavailable"), error
    assert "object storage" in error["title"]
    for secret in (str(port), "127.0.0.1", "bucket-name", "jobs/abc", "AKIDSECRET"):
        assert secret not in text, (secret, text)


def test_redis_down_is_named_without_its_address() -> None:
    port = free_port()
    with pytest.raises(redis.exceptions.ConnectionError) as caught:
        redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5).ping()
    error = describe_error("uncertainty", caught.value)
    assert error["type"].endswith(":redis-unavailable") and str(port) not in json.dumps(error)


def test_other_errors_stay_internal() -> None:
    assert describe_error("groups", ValueError("boom"))["type"].endswith(":internal")


def test_a_long_error_is_cut_at_a_word_with_an_ellipsis_and_a_short_one_is_kept_whole() -> None:
    words = " ".join(f"word{i:03d}" for i in range(200))  # 1,599 characters
    detail = describe_error("caption", RuntimeError(words))["detail"]
    assert len(detail) <= 500 and detail.endswith("…")
    kept = detail.removesuffix("…").split(" ")
    assert kept[0] == "RuntimeError:" and all(w in words.split(" ") for w in kept[1:])  # whole words
    assert describe_error("caption", RuntimeError("short and whole"))["detail"] == (
        "RuntimeError: short and whole"
    )


@pytest.mark.parametrize(
    ("message", "hidden"),
    [
        ("Can't load model from '/tmp/neuron-atlas-check-x1y2/model.safetensors'", "/tmp/neuron"),
        ("cache miss in /root/.cache/torch/hub/checkpoints", "/root"),
        ("HTTPConnectionPool(host='127.0.0.1', port=9000): Max retries exceeded", "127.0.0.1"),
        ("HTTPConnectionPool(host='minio', port=9000): Max retries exceeded", "9000"),
        ("GET http://minio.internal:9000/bucket/jobs/x failed", "minio.internal"),
        ("connect to [fd00:ec2::254]:80 refused", "fd00:ec2::254"),
        ("read C:\\models\\x.bin", "models"),
    ],
)
def test_an_internal_error_names_no_path_host_or_address(message: str, hidden: str) -> None:
    error = describe_error("activation", OSError(message))
    assert hidden not in json.dumps(error), error
    assert error["detail"].startswith("OSError: ")


def test_a_user_facing_error_keeps_its_words_but_not_the_workers_paths() -> None:
    from neuron_atlas_client.errors import ModelLoadError

    exc = ModelLoadError(
        "No weights for resnet18 in /models/torch/hub/checkpoints (downloads are off).",
        "Run neuron-atlas fetch-models, or mount the weights at /models/torch.",
    )
    error = describe_error("activation", exc)
    assert "/models" not in json.dumps(error)
    assert error["detail"] == "No weights for resnet18 in <path> (downloads are off)."
    assert error["fix"] == "Run neuron-atlas fetch-models, or mount the weights at <path>."


def test_retry_pauses_grow_and_stop_at_the_window() -> None:
    from shared.jobs.tasks import retry_pause

    pauses = []
    while (pause := retry_pause(len(pauses), 120)) is not None:
        pauses.append(pause)
    assert pauses == [5, 10, 20, 30, 30] and sum(pauses) <= 120
    assert retry_pause(0, 0) is None  # a window of 0: no retries
