"""A wrong method answers 405 with an `Allow` header naming every method the path serves.

Starlette named only the first matching route's methods, and `/v1/jobs/{job_id}` matched
`/v1/jobs/X:cancel` too, so `PUT /v1/jobs/X:cancel` answered `Allow: GET` (issue 12, item 14).
In process: routing answers a 405 before any dependency (Redis, S3) is asked."""

from __future__ import annotations

from collections import defaultdict

import pytest
from fastapi.testclient import TestClient

from services.gateway.main import create_app
from services.gateway.methods import endpoints

PROBLEM = "application/problem+json"
JOB = "0123456789abcdef0123456789abcdef"
VALUES = {
    "job_id": JOB,
    "cluster_id": "L1-0",
    "layer": "layer4",
    "channel": "3",
    "image_id": "a" * 64,
    "model_id": "b" * 32,
    "comparison_id": "c" * 32,
    "key": "candidate",
}


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app())  # no lifespan: nothing behind the routes is needed


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", f"/v1/jobs/{JOB}:cancel", "POST"),
        ("GET", f"/v1/jobs/{JOB}:cancel", "POST"),
        ("DELETE", f"/v1/jobs/{JOB}:relabel", "POST"),
        ("PUT", f"/v1/jobs/{JOB}", "DELETE, GET"),
        ("PATCH", "/v1/jobs", "GET, POST"),
    ],
)
def test_a_wrong_method_gets_405_with_the_paths_methods(
    client: TestClient, method: str, path: str, allow: str
) -> None:
    answer = client.request(method, path)
    assert answer.status_code == 405, answer.text
    assert answer.headers["allow"] == allow
    assert answer.headers["content-type"].startswith(PROBLEM)
    assert allow in answer.json()["fix"]


def test_every_route_answers_a_wrong_method_with_all_its_methods(client: TestClient) -> None:
    methods: dict[str, set[str]] = defaultdict(set)
    for template, served in endpoints(client.app.routes):  # type: ignore[attr-defined]
        methods[template] |= served
    assert len(methods) > 25  # included routers' routes too
    for template, allowed in methods.items():
        path = template.format(**VALUES, name="app.js")
        wrong = next(m for m in ("PATCH", "PUT", "DELETE", "POST") if m not in allowed)
        answer = client.request(wrong, path)
        assert answer.status_code == 405, (wrong, path, answer.status_code)
        assert answer.headers["allow"] == ", ".join(sorted(allowed)), (wrong, path)
