"""Artifact storage: one interface; a local-directory store (embedded mode) and an S3 store on the
`minio` client (the suite). Stage steps see a job's keys relative to `jobs/{job_id}/` through
`PrefixedStore`."""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import numpy as np

if TYPE_CHECKING:  # the minio client is only needed by the suite
    from minio import Minio


class Store(Protocol):
    """Keys are `/`-separated paths relative to the store's root, named as in
    docs/architecture.md, 'Object storage layout'."""

    def put_bytes(self, key: str, data: bytes) -> None: ...
    def put_file(self, key: str, path: Path) -> None:
        """A file's contents under `key`, without reading it into memory (model weights, a large
        hierarchy.json)."""
        ...

    def get_bytes(self, key: str) -> bytes:
        """The object's bytes; `FileNotFoundError` when there is none."""
        ...

    def size(self, key: str) -> int:
        """The object's size in bytes; `FileNotFoundError` when there is none."""
        ...

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """`length` bytes of the object from `offset` (0: to its end; fewer where it ends first)."""
        ...

    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> Iterator[str]: ...
    def delete_prefix(self, prefix: str) -> None: ...


class LocalStore:
    """A directory on disk; writes are atomic (temp file, then rename) so readers never see halves."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        # Absolute and symlink-free once, here: every key is then checked and listed against the
        # same root, whatever form (relative, `~`, a symlink) the caller gave it in.
        self.root = Path(root).expanduser().resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"storage key escapes the store: {key!r}")
        return path

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_bytes(data)
        tmp.replace(path)

    def put_file(self, key: str, path: Path) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        shutil.copyfile(path, tmp)
        tmp.replace(target)

    def get_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        with self._path(key).open("rb") as file:
            file.seek(offset)
            return file.read(length or -1)  # 0: to the end, as S3Store

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> Iterator[str]:
        base = self._path(prefix) if prefix else self.root
        if base.is_file():
            yield prefix
            return
        if not base.is_dir():
            return
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                yield path.relative_to(self.root).as_posix()

    def delete_prefix(self, prefix: str) -> None:
        path = self._path(prefix)
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def make_s3_client(
    endpoint: str,
    access_key: str,
    secret_key: str,
    region: str,
    connect_timeout_s: float = 5.0,
    read_timeout_s: float = 60.0,
    retries: int = 3,
) -> Minio:
    """A `minio` client with explicit timeouts and retries (with backoff, on connection errors and
    5xx answers), so a stalled server fails a task instead of hanging it."""
    # minio, urllib3: the suite extra; LocalStore (embedded runs) needs neither
    import urllib3
    from minio import Minio

    url = urlsplit(endpoint)
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s),
        retries=urllib3.Retry(
            total=retries, backoff_factor=0.3, status_forcelist=(500, 502, 503, 504), allowed_methods=None
        ),
        maxsize=16,
    )
    # A fixed region means presigning is a local computation: no request to the server.
    return Minio(
        url.netloc,
        access_key=access_key,
        secret_key=secret_key,
        secure=url.scheme == "https",
        region=region,
        http_client=http,
    )


_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound"})


class S3Store:
    """A bucket of any S3 server (MinIO, SeaweedFS, AWS). `presigner` is a client configured with
    the public endpoint, so links handed to users point where users can reach."""

    def __init__(self, client: Minio, bucket: str, presigner: Minio | None = None) -> None:
        self.client = client
        self.bucket = bucket
        self.presigner = presigner or client

    def put_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(self.bucket, key, io.BytesIO(data), len(data))

    def get_bytes(self, key: str) -> bytes:
        return self.get_range(key, 0, 0)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """`length` bytes from `offset` (0: to the end); `FileNotFoundError` when there is no object."""
        from minio.error import S3Error  # minio: the suite extra; LocalStore (embedded runs) needs none

        try:
            response = self.client.get_object(self.bucket, key, offset=offset, length=length)
        except S3Error as exc:
            if exc.code in _MISSING_CODES:
                raise FileNotFoundError(f"no object {key!r} in bucket {self.bucket}") from None
            raise
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def put_file(self, key: str, path: Path) -> None:
        """Upload a file in parts: model weights are too large to hold in memory twice."""
        self.client.fput_object(self.bucket, key, str(path))

    def get_file(self, key: str, path: Path) -> None:
        from minio.error import S3Error  # minio: the suite extra; LocalStore (embedded runs) needs none

        try:
            self.client.fget_object(self.bucket, key, str(path))
        except S3Error as exc:
            if exc.code in _MISSING_CODES:
                raise FileNotFoundError(f"no object {key!r} in bucket {self.bucket}") from None
            raise

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except FileNotFoundError:
            return False
        return True

    def size(self, key: str) -> int:
        from minio.error import S3Error  # minio: the suite extra; LocalStore (embedded runs) needs none

        try:
            found = self.client.stat_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in _MISSING_CODES:
                raise FileNotFoundError(f"no object {key!r} in bucket {self.bucket}") from None
            raise
        return int(found.size or 0)

    def list(self, prefix: str) -> Iterator[str]:
        for item in self.client.list_objects(self.bucket, prefix=prefix, recursive=True):
            if item.object_name is not None and not item.is_dir:
                yield item.object_name

    def delete_prefix(self, prefix: str) -> None:
        from minio.deleteobjects import (
            DeleteObject,  # minio: the suite extra; LocalStore (embedded runs) needs none
        )

        errors = list(
            self.client.remove_objects(self.bucket, (DeleteObject(key) for key in self.list(prefix)))
        )
        if errors:
            raise OSError(f"could not delete {len(errors)} objects under {prefix!r}: {errors[0]}")

    def presigned_url(self, key: str, expires_s: int) -> str:
        return self.presigner.presigned_get_object(self.bucket, key, expires=timedelta(seconds=expires_s))

    def ping(self) -> None:
        """Raise unless the bucket can be reached."""
        if not self.client.bucket_exists(self.bucket):
            raise OSError(f"bucket {self.bucket} does not exist")

    def ensure_bucket(self) -> None:
        if not self.client.bucket_exists(self.bucket):
            self.client.make_bucket(self.bucket)


class PrefixedStore:
    """A view of `inner` under `prefix` (e.g. `jobs/{job_id}/`): stage steps use relative keys."""

    def __init__(self, inner: Store, prefix: str) -> None:
        if prefix and not prefix.endswith("/"):
            raise ValueError(f"prefix must end with '/': {prefix!r}")
        self.inner = inner
        self.prefix = prefix

    def _key(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"storage key escapes the store: {key!r}")
        return self.prefix + key

    def put_bytes(self, key: str, data: bytes) -> None:
        self.inner.put_bytes(self._key(key), data)

    def put_file(self, key: str, path: Path) -> None:
        self.inner.put_file(self._key(key), path)

    def get_bytes(self, key: str) -> bytes:
        return self.inner.get_bytes(self._key(key))

    def size(self, key: str) -> int:
        return self.inner.size(self._key(key))

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        return self.inner.get_range(self._key(key), offset, length)

    def exists(self, key: str) -> bool:
        return self.inner.exists(self._key(key))

    def list(self, prefix: str) -> Iterator[str]:
        for key in self.inner.list(self._key(prefix)):
            yield key[len(self.prefix) :]

    def delete_prefix(self, prefix: str) -> None:
        self.inner.delete_prefix(self._key(prefix))


class ModelStore:
    """One model's view of a multi-model job's store (docs/architecture.md, 'One job, several
    models'): writes go under `prefix` (`models/{key}/`), reads look there first and then at the
    job's root, where the artifacts every model shares are (manifest, captions, clusters, labels).
    So the model's folder and the root read as that model's complete single-model result.

    `shared_prefixes` are written at the root: facts about the images, not the model, that every
    model's stage writes alike (which images decode; their thumbnails), and that the shared
    stages after them read there."""

    def __init__(self, root: Store, prefix: str, shared_prefixes: tuple[str, ...] = ()) -> None:
        if not prefix.endswith("/"):
            raise ValueError(f"prefix must end with '/': {prefix!r}")
        self.root, self.prefix, self.shared_prefixes = root, prefix, shared_prefixes
        self.own = PrefixedStore(root, prefix)

    def _writes(self, key: str) -> Store:
        return self.root if key.startswith(self.shared_prefixes) else self.own

    def put_bytes(self, key: str, data: bytes) -> None:
        self._writes(key).put_bytes(key, data)

    def put_file(self, key: str, path: Path) -> None:
        self._writes(key).put_file(key, path)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.own.get_bytes(key)
        except FileNotFoundError:
            return self.root.get_bytes(key)

    def size(self, key: str) -> int:
        try:
            return self.own.size(key)
        except FileNotFoundError:
            return self.root.size(key)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        try:
            return self.own.get_range(key, offset, length)
        except FileNotFoundError:
            return self.root.get_range(key, offset, length)

    def exists(self, key: str) -> bool:
        return self.own.exists(key) or self.root.exists(key)

    def list(self, prefix: str) -> Iterator[str]:
        """The model's keys under `prefix`, and the root's that it has none of (never another
        model's folder)."""
        own = set(self.own.list(prefix))
        models = self.prefix.split("/", 1)[0] + "/"
        shared = {key for key in self.root.list(prefix) if not key.startswith(models)}
        yield from sorted(own | shared)

    def delete_prefix(self, prefix: str) -> None:
        self.own.delete_prefix(prefix)


def put_json(store: Store, key: str, value: Any) -> None:
    store.put_bytes(key, json.dumps(value, indent=1, ensure_ascii=False).encode())


def get_json(store: Store, key: str) -> Any:
    return json.loads(store.get_bytes(key))


def put_npy(store: Store, key: str, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    store.put_bytes(key, buffer.getvalue())


def get_npy(store: Store, key: str) -> np.ndarray:
    return np.load(io.BytesIO(store.get_bytes(key)), allow_pickle=False)


def put_npz(store: Store, key: str, **arrays: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, allow_pickle=False, **arrays)
    store.put_bytes(key, buffer.getvalue())


def get_npz(store: Store, key: str) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(store.get_bytes(key)), allow_pickle=False) as data:
        return {name: data[name] for name in data.files}
