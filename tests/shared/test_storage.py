"""LocalStore and S3Store (on a real SeaweedFS) behave as one interface; PrefixedStore scopes keys."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shared.storage.stores import LocalStore, PrefixedStore, S3Store, Store, get_npy, make_s3_client, put_npy


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "local":
        yield LocalStore(tmp_path)
        return
    server: Any = request.getfixturevalue("s3_server")
    bucket = f"store-{uuid.uuid4().hex[:12]}"
    server.make_bucket(bucket)
    yield S3Store(server.client(), bucket)


def test_stores_round_trip_list_and_delete_alike(store: Store) -> None:
    store.put_bytes("jobs/a/captions/00001.json", b"1")
    store.put_bytes("jobs/a/captions/00000.json", b"0")
    store.put_bytes("jobs/b/spec.json", b"b")
    put_npy(store, "jobs/a/partitions.npy", np.arange(6, dtype=np.int32).reshape(3, 2))
    assert store.get_bytes("jobs/a/captions/00001.json") == b"1"
    assert get_npy(store, "jobs/a/partitions.npy").tolist() == [[0, 1], [2, 3], [4, 5]]
    assert sorted(store.list("jobs/a/captions/")) == [
        "jobs/a/captions/00000.json",
        "jobs/a/captions/00001.json",
    ]
    assert store.exists("jobs/b/spec.json") and not store.exists("jobs/b/nothing.json")
    store.delete_prefix("jobs/a/")
    assert list(store.list("jobs/a/")) == [] and store.exists("jobs/b/spec.json")


def test_missing_objects_raise_file_not_found(store: Store) -> None:
    with pytest.raises(FileNotFoundError):
        store.get_bytes("jobs/none/spec.json")


def test_files_are_stored_without_reading_them_whole_alike(store: Store, tmp_path: Path) -> None:
    """put_file: how hierarchy.json and model weights reach a store, directly or under a prefix."""
    source = tmp_path / "upload" / "hierarchy.json"
    source.parent.mkdir()
    source.write_bytes(b"{}" * 1000)
    PrefixedStore(store, "jobs/j1/").put_file("hierarchy.json", source)
    assert store.get_bytes("jobs/j1/hierarchy.json") == source.read_bytes()
    assert source.exists()  # the caller's file stays theirs


def test_prefixed_store_sees_only_relative_keys_under_its_prefix(store: Store) -> None:
    job = PrefixedStore(store, "jobs/j1/")
    job.put_bytes("captions/00000.json", b"x")
    store.put_bytes("jobs/j2/captions/00000.json", b"y")
    assert list(job.list("captions/")) == ["captions/00000.json"]
    assert store.get_bytes("jobs/j1/captions/00000.json") == b"x"
    with pytest.raises(ValueError, match="escapes"):
        job.get_bytes("../j2/captions/00000.json")


def test_presigned_links_point_at_the_public_endpoint() -> None:
    # A fixed region makes presigning a local computation: no server is needed for this.
    internal = make_s3_client("http://minio:9000", "key", "secret-value", "us-east-1")
    public = make_s3_client("https://files.example.org", "key", "secret-value", "us-east-1")
    url = S3Store(internal, "bucket", presigner=public).presigned_url("jobs/x/hierarchy.json", 600)
    assert url.startswith("https://files.example.org/bucket/jobs/x/hierarchy.json?")
    assert "X-Amz-Expires=600" in url and "X-Amz-Signature=" in url


@pytest.mark.parametrize("form", ["relative", "tilde", "symlink"])
def test_local_store_lists_keys_whatever_form_its_root_was_given_in(
    form: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    root = {"relative": "out/run", "tilde": "~/out/run", "symlink": "link/run"}[form]
    store = LocalStore(root)
    store.put_bytes("captions/00000.json", b"0")
    store.put_bytes("spec.json", b"s")
    assert list(store.list("captions")) == ["captions/00000.json"]
    assert list(store.list("")) == ["captions/00000.json", "spec.json"]
    assert not (tmp_path / "~").exists()
