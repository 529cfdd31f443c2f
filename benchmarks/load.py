"""Load run against the whole suite: many status pollers and a few submitters at once.

    PYTHONPATH=. HF_HUB_OFFLINE=1 python benchmarks/load.py --seconds 60 --pollers 100 --submitters 10

Starts a real redis-server, SeaweedFS, one Celery worker per service and the gateway (uvicorn)
on 127.0.0.1, as the tests do. Then, for `--seconds`:
  - each poller GETs `/v1/jobs/{id}` of one of five jobs submitted (and finished) before the
    run, in a loop, on its own kept-alive connection (what a client waiting for its job does);
  - each submitter POSTs a 2-image job (captions brought), reads it back, and cancels it, in a
    loop: the write path, with the queue and Redis busy, without burying the 2-core workers
    under hours of work.
Reports p50/p99 latency per route and every error (a non-2xx answer or a failed request); it
exits 1 when there was any. A 409 to a cancel (the job ended first) is counted apart: the API
answers it correctly. The load generator runs in this one process, on the same machine
as the suite, so its latencies include the client's own waiting for the CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# the test suite's real servers, started the same way here
from tests.servers import ProcessGroup, start_redis, start_seaweedfs, start_suite  # noqa: E402
from tests.services.gateway.helpers import LIGHT_OPTIONS  # noqa: E402

KEY = "load-key"
# Light options: the five watched jobs finish in seconds (the submitters' jobs are cancelled).
SPEC = {"options": LIGHT_OPTIONS}


class Recorder:
    """Latencies per route, errors by kind, and expected refusals (not errors) by kind."""

    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()  # expected answers besides 2xx, counted

    async def call(
        self, route: str, request: Callable[[], Awaitable[httpx.Response]], expected: tuple[int, ...] = ()
    ) -> httpx.Response | None:
        """Time one request; anything but a 2xx or an `expected` status is an error."""
        start = time.perf_counter()
        try:
            answer = await request()
        except httpx.HTTPError as exc:
            self.errors[f"{route}: {type(exc).__name__}"] += 1
            return None
        self.latencies[route].append(time.perf_counter() - start)
        if answer.status_code in expected:
            self.outcomes[f"{route}: HTTP {answer.status_code}"] += 1
        elif not answer.is_success:
            self.errors[f"{route}: HTTP {answer.status_code}"] += 1
            return None
        return answer


async def finished(client: httpx.AsyncClient, job: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = (await client.get(f"/v1/jobs/{job}")).raise_for_status().json()["status"]
        if status in ("succeeded", "failed", "cancelled"):
            return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"job {job} did not finish in {timeout_s} s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1]


async def load(
    url: str, gateway_pid: int, images: list[tuple[str, bytes]], args: argparse.Namespace
) -> dict[str, Any]:
    recorder = Recorder()
    files = [("files", (name, data, "image/png")) for name, data in images]
    captions = {name: f"a test picture number {i}" for i, (name, _) in enumerate(images)}
    spec = json.dumps({**SPEC, "captions": captions})
    # Idle connections are dropped after 2 s, before uvicorn's own 5 s keep-alive timeout: at
    # the same 5 s (httpx's default), a request could go out on a connection the server was
    # closing at that moment, and fail with ReadError (2 of 3,600 in a first run).
    limits = httpx.Limits(max_connections=args.pollers + args.submitters + 4, keepalive_expiry=2.0)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {KEY}"}, limits=limits, timeout=60
    ) as client:
        # Jobs for the pollers to watch, finished before the clock starts: on a small machine
        # their model work would take the cores from the gateway, and this measures the gateway.
        watched = []
        for _ in range(5):
            answer = await client.post("/v1/jobs", files=files, data={"spec": spec})
            answer.raise_for_status()
            watched.append(answer.json()["id"])
        for job in watched:
            await finished(client, job, timeout_s=300)
        deadline = time.monotonic() + args.seconds

        async def poller(index: int) -> None:
            path = f"/v1/jobs/{watched[index % len(watched)]}"
            while time.monotonic() < deadline:
                await recorder.call("GET /v1/jobs/{id}", lambda: client.get(path))

        async def submitter() -> None:
            while time.monotonic() < deadline:
                answer = await recorder.call(
                    "POST /v1/jobs", lambda: client.post("/v1/jobs", files=files, data={"spec": spec})
                )
                if answer is None:
                    continue
                job = f"/v1/jobs/{answer.json()['id']}"
                await recorder.call("GET /v1/jobs/{id}", lambda: client.get(job))  # noqa: B023 (awaited here)
                # 409: the job ended before the cancel came, which the API answers correctly
                await recorder.call(
                    "POST /v1/jobs/{id}:cancel",
                    lambda: client.post(f"{job}:cancel"),  # noqa: B023
                    expected=(409,),
                )

        started, own_cpu = time.perf_counter(), time.process_time()
        gateway_cpu = cpu_seconds(gateway_pid)
        await asyncio.gather(
            *(poller(i) for i in range(args.pollers)), *(submitter() for _ in range(args.submitters))
        )
        elapsed = time.perf_counter() - started
        own_cpu, gateway_cpu = time.process_time() - own_cpu, cpu_seconds(gateway_pid) - gateway_cpu
    ms = 1000
    routes = {
        route: {
            "requests": len(values),
            "per_s": round(len(values) / elapsed, 1),
            "p50_ms": round(percentile(values, 0.5) * ms, 1),
            "p99_ms": round(percentile(values, 0.99) * ms, 1),
        }
        for route, values in sorted(recorder.latencies.items())
    }
    return {
        "seconds": round(elapsed, 1),
        "pollers": args.pollers,
        "submitters": args.submitters,
        "cores": os.cpu_count(),
        "routes": routes,
        "errors": dict(recorder.errors),
        "expected_refusals": dict(recorder.outcomes),
        "error_count": sum(recorder.errors.values()),
        # Which side was busy: CPU seconds over the run of the gateway and of this load generator
        # (on 2 cores, 2 x seconds is everything).
        "gateway_cpu_s": round(gateway_cpu, 1),
        "load_generator_cpu_s": round(own_cpu, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--pollers", type=int, default=100)
    parser.add_argument("--submitters", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("NEURON_ATLAS_OFFLINE", "1")

    from neuron_atlas.sample import make_sample

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in ("redis", "s3", "logs"):
            (work / name).mkdir()
        sample = make_sample(work / "images", per_concept=1, size=64)
        images = [(p.name, p.read_bytes()) for p in sorted(sample.glob("*.png"))[:2]]
        redis = start_redis(work / "redis")
        s3 = start_seaweedfs(work / "s3", "load-access", "load-secret-123")
        group = ProcessGroup(work / "logs")
        try:
            s3.make_bucket("load")
            env = {
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "ENVIRONMENT": "development",
                "REDIS_URL": redis.url,
                "S3_ENDPOINT": s3.endpoint,
                "S3_BUCKET": "load",
                "S3_ACCESS_KEY": "load-access",
                "S3_SECRET_KEY": "load-secret-123",
                "GATEWAY_API_KEYS": json.dumps({hashlib.sha256(KEY.encode()).hexdigest(): "load"}),
                # every submitter's job is cancelled at once, but a cancelling one still counts
                # until a worker sees it: the quota is not what this run measures
                "GATEWAY_MAX_CONCURRENT_JOBS": "100000",
                "OMP_NUM_THREADS": "1",
            }
            url = start_suite(group, env)
            result = asyncio.run(load(url, group.processes["gateway"].pid, images, args))
        finally:
            group.stop()
            s3.stop()
            redis.stop()
    print(
        f"{result['cores']} cores; {args.pollers} pollers and {args.submitters} submitters "
        f"for {result['seconds']} s"
    )
    for route, numbers in result["routes"].items():
        print(
            f"  {route:28} {numbers['requests']:7d} requests  {numbers['per_s']:7.1f}/s  "
            f"p50 {numbers['p50_ms']:7.1f} ms  p99 {numbers['p99_ms']:7.1f} ms"
        )
    print(
        f"CPU over the run: gateway {result['gateway_cpu_s']} s, "
        f"load generator {result['load_generator_cpu_s']} s"
    )
    print(f"errors: {result['error_count']} {result['errors'] or ''}")
    if result["expected_refusals"]:
        print(f"expected refusals (not errors): {result['expected_refusals']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    sys.exit(1 if result["error_count"] else 0)


if __name__ == "__main__":
    main()
