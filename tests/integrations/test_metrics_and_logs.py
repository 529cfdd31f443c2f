"""After a job: Prometheus metrics from the gateway and every worker count it, and its JSON log
lines, each with its job id and tenant, come from the gateway and every worker."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.integrations.conftest import FinishedJob
from tests.servers import SUITE_WORKERS


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(url, timeout=10).raise_for_status().text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(v for (n, found), v in samples.items() if n == name and set(labels.items()) <= set(found))


def test_gateway_metrics_count_requests_and_latency_by_route(suite: Any, finished_job: FinishedJob) -> None:
    samples = scrape(f"{suite.url}/metrics")
    polls = len(finished_job.progress)  # wait() polled GET /v1/jobs/{id} this often
    route = {"handler": "/v1/jobs/{job_id}", "method": "GET"}
    assert value(samples, "http_requests_total", **route, status="2xx") >= polls
    assert value(samples, "http_request_duration_seconds_count", **route) >= polls
    assert value(samples, "http_requests_total", handler="/v1/jobs", method="POST") >= 1


STAGES_OF = {
    "caption": ["caption"],
    "activation": ["activation", "groups"],
    "embed_cluster": ["embed_cluster"],
    "labelling": ["labelling", "assemble"],
    "uncertainty": ["uncertainty"],
}


def test_worker_metrics_count_the_jobs_stages_images_and_deliveries(
    suite: Any, finished_job: FinishedJob, receiver: Any
) -> None:
    receiver.wait_for("/down", 3)  # the webhook retries have run
    time.sleep(0.5)
    images = finished_job.job.images
    for service in SUITE_WORKERS:
        samples = scrape(suite.metrics[service])
        for stage in STAGES_OF[service]:
            assert value(samples, "neuron_atlas_stage_duration_seconds_count", stage=stage) >= 1, (
                service,
                stage,
            )
            assert value(samples, "neuron_atlas_stage_images_total", stage=stage) >= images, (service, stage)
            assert value(samples, "neuron_atlas_stage_images_per_second_count", stage=stage) >= 1
        depths = {dict(labels)["queue"] for (name, labels) in samples if name == "neuron_atlas_queue_depth"}
        assert depths == set(SUITE_WORKERS), service
    labelling = scrape(suite.metrics["labelling"])
    assert ("neuron_atlas_llm_requests_total", (("model", "none"),)) in labelling  # offline: 0 requests
    assert value(labelling, "neuron_atlas_webhook_deliveries_total", outcome="delivered") >= 1
    assert value(labelling, "neuron_atlas_webhook_deliveries_total", outcome="failed") >= 1
    assert value(labelling, "neuron_atlas_task_retries_total", task="webhooks.deliver") >= 3


def test_every_service_logs_the_job_as_json_with_its_id_and_tenant(
    suite: Any, finished_job: FinishedJob
) -> None:
    job_id = finished_job.job.id
    for name in ("gateway", *SUITE_WORKERS):
        lines = (suite.logs / f"{name}.log").read_text(errors="replace").splitlines()
        mentioning = [line for line in lines if job_id in line]
        entries = [json.loads(line) for line in lines if line.startswith("{")]
        of_job = [e for e in entries if e.get("job_id") == job_id]
        assert of_job, f"{name} logged nothing for job {job_id}"
        assert {e["tenant"] for e in of_job} == {"tenant-a"}, name
        for line in mentioning:  # a line about the job is a JSON object that says so
            entry = json.loads(line)
            if entry["job_id"] is None and "uncertainty.compare" in line:
                # a comparison of this job with another (tests/integrations/test_comparisons.py)
                # concerns two jobs: it carries the tenant, and no one job id
                assert entry["tenant"] == "tenant-a", (name, line)
                continue
            assert entry["job_id"] == job_id, (name, line)
    gateway = [
        json.loads(x) for x in (suite.logs / "gateway.log").read_text().splitlines() if x.startswith("{")
    ]
    submitted = [e for e in gateway if e.get("method") == "POST" and e.get("job_id") == job_id]
    assert submitted and submitted[0]["status"] == 202 and submitted[0]["path"] == "/v1/jobs"
