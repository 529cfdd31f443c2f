"""Worker metrics for Prometheus (prometheus-client), served by each worker on
`WORKER_METRICS_PORT` at `/metrics`.

Why multiprocess mode and not an exporter: a Celery worker runs its tasks in prefork child
processes, so a plain registry in the main process would never see them. An exporter that reads
Celery's events (celery-exporter) sees task counts and run times only, not what the tasks know:
images per shard, the LLM's tokens and cost. In multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`, an
emptyDir or tmpfs) every process writes its own memory-mapped files and the main process sums
them when scraped. Queue depths are read from Redis at scrape time, so they are never stale.
Without `PROMETHEUS_MULTIPROC_DIR` (e.g. `--pool solo`) the process's own registry is served.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
RATE_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 5000)

STAGE_SECONDS = Histogram(
    "neuron_atlas_stage_duration_seconds",
    "Run time of one task, by stage.",
    ["stage"],
    buckets=DURATION_BUCKETS,
)
STAGE_IMAGES = Counter("neuron_atlas_stage_images", "Images processed, by stage.", ["stage"])
IMAGES_PER_SECOND = Histogram(
    "neuron_atlas_stage_images_per_second",
    "Throughput of one task, by stage.",
    ["stage"],
    buckets=RATE_BUCKETS,
)
TASK_FAILURES = Counter("neuron_atlas_task_failures", "Tasks that raised, by task.", ["task"])
TASK_RETRIES = Counter("neuron_atlas_task_retries", "Tasks retried, by task.", ["task"])
LLM_REQUESTS = Counter(
    "neuron_atlas_llm_requests", "Requests to the LLM endpoint (retries included).", ["model"]
)
LLM_TOKENS = Counter("neuron_atlas_llm_tokens", "Tokens the LLM endpoint reported.", ["model", "kind"])
LLM_COST = Counter("neuron_atlas_llm_cost_usd", "Cost of the LLM requests (when prices are set).", ["model"])
WEBHOOK_DELIVERIES = Counter("neuron_atlas_webhook_deliveries", "Webhook attempts, by outcome.", ["outcome"])


class QueueDepths(Collector):
    """Waiting tasks per queue (the Redis list Celery fills), read at each scrape."""

    def __init__(self, redis_url: str, queues: tuple[str, ...]) -> None:
        self.redis_url, self.queues = redis_url, queues

    def collect(self) -> Any:
        family = GaugeMetricFamily(
            "neuron_atlas_queue_depth", "Tasks waiting in each queue.", labels=["queue"]
        )
        try:
            client = redis.Redis.from_url(self.redis_url, socket_timeout=2, socket_connect_timeout=2)
            with client.pipeline() as pipe:
                for queue in self.queues:
                    pipe.llen(queue)
                for queue, depth in zip(self.queues, pipe.execute(), strict=True):
                    family.add_metric([queue], float(depth))
            client.close()
        except Exception as exc:  # a scrape must not fail because Redis is briefly away
            log.warning("queue depths unavailable: %s", type(exc).__name__)
        yield family


def serving_registry() -> CollectorRegistry:
    """The registry to serve: the sum over every process's files in multiprocess mode."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def reset_multiprocess_dir() -> None:
    """Files of an earlier run would be summed in: the directory starts empty (prometheus docs)."""
    folder = os.environ.get(MULTIPROC_ENV)
    if folder:
        path = Path(folder)
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)


def start_worker_metrics(port: int, redis_url: str, queues: tuple[str, ...]) -> None:
    reset_multiprocess_dir()
    registry = serving_registry()
    registry.register(QueueDepths(redis_url, queues))
    start_http_server(port, addr="0.0.0.0", registry=registry)
    log.info("metrics on :%d/metrics", port)


def process_exited(pid: int) -> None:
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)


def observe_task(stage: str, seconds: float, images: int) -> None:
    STAGE_SECONDS.labels(stage).observe(seconds)
    if images:
        STAGE_IMAGES.labels(stage).inc(images)
        IMAGES_PER_SECOND.labels(stage).observe(images / max(seconds, 1e-6))


def observe_llm(model: str | None, requests: int, prompt: int, completion: int, cost: float | None) -> None:
    name = model or "none"
    LLM_REQUESTS.labels(name).inc(requests)
    LLM_TOKENS.labels(name, "prompt").inc(prompt)
    LLM_TOKENS.labels(name, "completion").inc(completion)
    if cost:
        LLM_COST.labels(name).inc(cost)
