"""A job failed by an unreachable dependency says which one, and never its address or keys."""

from __future__ import annotations

import json

import pytest
import redis

from shared.storage import make_s3_client
from shared.tasks import describe_error
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


def test_retry_pauses_grow_and_stop_at_the_window() -> None:
    from shared.tasks import retry_pause

    pauses = []
    while (pause := retry_pause(len(pauses), 120)) is not None:
        pauses.append(pause)
    assert pauses == [5, 10, 20, 30, 30] and sum(pauses) <= 120
    assert retry_pause(0, 0) is None  # a window of 0: no retries
