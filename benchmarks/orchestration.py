"""Orchestration overhead of the service suite, against the embedded run on the same machine.

    PYTHONPATH=. HF_HUB_OFFLINE=1 python benchmarks/orchestration.py --images 240

Starts a real redis-server, SeaweedFS, one Celery worker per service and the gateway (uvicorn),
all on 127.0.0.1. Reports:
  - a job on N generated images (captions brought, ResNet18 with random weights): embedded wall
    time vs. suite time from POST to `succeeded` (after a warm-up job, so workers hold their
    models, as a running deployment does), each the median of `--repeats` alternated runs;
    ratio and per-image overhead in ms. The uncertainty stage is in both, with its model
    passes at the default budget, as the demo runs them (`--passes default`: the planned
    dropout, augmentation, specificity and pruning passes, in the uncertainty worker in the
    suite) or none (`--passes off`: `--uncertainty-budget 0`, statistics only);
  - gateway latency of GET /v1/jobs/{id} under 100 concurrent pollers on kept-alive connections
    (p50, p99), with GET /healthz under the same load as the baseline (the server's cost with no
    work). The load generator shares the machine with the gateway.
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
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# the test suite's real servers, started the same way here
from tests.servers import ProcessGroup, start_redis, start_seaweedfs, start_suite, zip_folder  # noqa: E402

KEY = "benchmark-key"


def run_suite_job(
    client: httpx.Client, archive: bytes, options: dict[str, Any], poll_s: float = 0.5
) -> tuple[float, str, dict[str, float]]:
    """Wall time from POST to the job's `finished_at`, the job id, and seconds spent in each
    stage as the job record showed it (polled every `poll_s`, so each is that coarse; the
    upload itself is `submit`). The end comes from the job's own millisecond timestamp, so the
    polling can be as slow as a real client's: fast polling costs the gateway CPU that the
    workers on the same cores then lack."""
    posted = time.time()
    start = time.perf_counter()
    answer = client.post(
        "/v1/jobs",
        files=[("files", ("images.zip", archive, "application/zip"))],
        data={"spec": json.dumps({"options": options})},
    )
    answer.raise_for_status()
    stages: dict[str, float] = {"submit": time.perf_counter() - start}
    url = answer.headers["location"]
    current, since = "submit", time.perf_counter()
    while True:
        job = client.get(url).json()
        now = time.perf_counter()
        if job["stage"] != current:
            stages[current] = stages.get(current, 0.0) + now - since
            current, since = job["stage"], now
        if job["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(poll_s)
    stages[current] = stages.get(current, 0.0) + time.perf_counter() - since
    if job["status"] != "succeeded":
        raise RuntimeError(f"job ended {job['status']}: {job['error']}")
    return datetime.fromisoformat(job["finished_at"]).timestamp() - posted, job["id"], stages


async def poll_latencies(url: str, path: str, pollers: int, requests_each: int) -> list[float]:
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=pollers, max_keepalive_connections=pollers)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {KEY}"}, limits=limits
    ) as client:

        async def poller() -> None:
            (await client.get(path)).raise_for_status()  # connect first: pollers keep their connection
            for _ in range(requests_each):
                start = time.perf_counter()
                answer = await client.get(path)
                latencies.append(time.perf_counter() - start)
                answer.raise_for_status()

        await asyncio.gather(*(poller() for _ in range(pollers)))
    return latencies


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far, all its threads (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--shard-size", type=int, default=64)
    parser.add_argument("--pollers", type=int, default=100)
    parser.add_argument("--requests-each", type=int, default=20)
    parser.add_argument(
        "--passes",
        choices=("default", "off"),
        default="default",
        help="uncertainty model passes: the default budget (as the demo runs it), or none "
        "(--uncertainty-budget 0: statistics only)",
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=0.5,
        help="seconds between status polls of a suite job (its end time comes from the job)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="embedded runs and warm suite jobs, alternated (one of each per repeat, the suite "
        "idle while the embedded run goes); the medians are compared, so that one slow run on a "
        "shared machine does not decide the ratio",
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("NEURON_ATLAS_OFFLINE", "1")

    from neuron_atlas import pipeline
    from neuron_atlas.sample import make_sample
    from neuron_atlas_client.options import PipelineOptions

    # The uncertainty stage runs in both modes. Its model passes cost the same in both; "off"
    # keeps them from drowning the orchestration overhead measured.
    passes: dict[str, object] = {} if args.passes == "default" else {"uncertainty_budget": 0}
    options = {"allow_random_weights": True, "shard_size": args.shard_size, "device": "cpu", **passes}
    options = {name: list(v) if isinstance(v, tuple) else v for name, v in options.items()}  # JSON
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        images = make_sample(work / "images", per_concept=max(1, args.images // 6), size=128)
        n = len(list(images.glob("*.png")))
        archive = zip_folder(images)

        pipeline.run(images, work / "warm", PipelineOptions(**options))  # page cache, imports

        embedded_cpu: list[float] = []

        def run_embedded(repeat: int) -> float:
            start, cpu_start = time.perf_counter(), cpu_seconds(os.getpid())
            pipeline.run(images, work / f"embedded-{repeat}", PipelineOptions(**options))
            embedded_cpu.append(cpu_seconds(os.getpid()) - cpu_start)
            return time.perf_counter() - start

        (work / "redis").mkdir()
        (work / "s3").mkdir()
        (work / "logs").mkdir()
        redis = start_redis(work / "redis")
        s3 = start_seaweedfs(work / "s3", "bench-access", "bench-secret-123")
        s3.make_bucket("bench")
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "ENVIRONMENT": "development",
            "REDIS_URL": redis.url,
            "S3_ENDPOINT": s3.endpoint,
            "S3_BUCKET": "bench",
            "S3_ACCESS_KEY": "bench-access",
            "S3_SECRET_KEY": "bench-secret-123",
            "GATEWAY_API_KEYS": json.dumps({hashlib.sha256(KEY.encode()).hexdigest(): "bench"}),
        }
        group = ProcessGroup(work / "logs")
        try:
            url = start_suite(group, env)
            with httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120
            ) as client:
                cold_s, _, _ = run_suite_job(client, archive, options, args.poll_interval)
                embedded_runs, suite_runs = [], []
                pids = {name: process.pid for name, process in group.processes.items()}
                pids |= {"redis": redis.process.pid, "seaweedfs": s3.process.pid}
                pids["this script (client)"] = os.getpid()
                for repeat in range(args.repeats):
                    embedded_runs.append(run_embedded(repeat))
                    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
                    suite_s, job_id, stages = run_suite_job(client, archive, options, args.poll_interval)
                    cpu = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
                    suite_runs.append(suite_s)
                    print(
                        f"repeat {repeat + 1}: embedded {embedded_runs[-1]:.2f} s "
                        f"({embedded_cpu[-1]:.1f} CPU s), suite {suite_s:.2f} s "
                        f"({sum(cpu.values()):.1f} CPU s, all processes)",
                        flush=True,
                    )
            embedded_s, suite_s = statistics.median(embedded_runs), statistics.median(suite_runs)

            total = args.pollers * args.requests_each
            health = asyncio.run(poll_latencies(url, "/healthz", args.pollers, args.requests_each))
            start = time.perf_counter()
            status = asyncio.run(poll_latencies(url, f"/v1/jobs/{job_id}", args.pollers, args.requests_each))
            status_rps = total / (time.perf_counter() - start)
        finally:
            group.stop()
            s3.stop()
            redis.stop()

    ms = 1000
    print(f"machine: {os.cpu_count()} cores; {n} images, shard size {args.shard_size}; passes {passes}")
    print(
        f"embedded run (median of {args.repeats})        {embedded_s:7.2f} s   "
        f"({statistics.median(embedded_cpu):.1f} CPU s, median)"
    )
    print(
        f"suite job, workers warm (median) {suite_s:7.2f} s   ratio {suite_s / embedded_s:5.2f}x   "
        f"overhead {(suite_s - embedded_s) / n * ms:6.1f} ms/image"
    )
    print(f"suite job, first (models load)   {cold_s:7.2f} s   ratio {cold_s / embedded_s:5.2f}x")
    print("  last warm job's stages (s): " + ", ".join(f"{name} {t:.1f}" for name, t in stages.items()))
    print(
        "  CPU seconds each process used during it: "
        + ", ".join(f"{name} {t:.1f}" for name, t in sorted(cpu.items(), key=lambda item: -item[1]))
    )
    print(f"{args.pollers} concurrent pollers, {total} requests each endpoint:")
    for name, values, extra in (
        ("GET /v1/jobs/{id}", status, f"{status_rps:6.0f} req/s"),
        ("GET /healthz     ", health, "(baseline)"),
    ):
        p50, p99 = percentile(values, 0.5) * ms, percentile(values, 0.99) * ms
        print(f"  {name}  p50 {p50:6.1f} ms   p99 {p99:6.1f} ms   {extra}")
    print(f"  status/baseline p50 ratio {percentile(status, 0.5) / percentile(health, 0.5):.2f}x")


if __name__ == "__main__":
    main()
