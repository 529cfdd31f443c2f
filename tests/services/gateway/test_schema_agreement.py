"""What schemathesis found: requests the OpenAPI document allows but the gateway refused (or the
reverse), and answers it gave that the document did not list. One test per defect, against the
real suite."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.services.gateway.test_api import LIGHT, assert_problem, images


@pytest.fixture
def client(suite: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=suite.url, headers=suite.headers("tenant-b"), timeout=60) as c:
        yield c


def test_any_page_token_the_schema_allows_is_accepted(client: httpx.Client) -> None:
    # was: base64 tokens, so a string the schema allowed answered an undocumented 400
    token = f"{0:020d}-{'0' * 32}"
    assert client.get("/v1/jobs", params={"page_token": token}).json() == {
        "jobs": [],
        "next_page_token": None,
    }
    assert_problem(client.get("/v1/jobs", params={"page_token": "not-a-token"}), 422, "invalid-request")


def test_the_schema_says_layers_is_a_non_empty_list_of_names(suite: Any) -> None:
    # was: `"layers": []` matched the schema and was refused with 422
    document = httpx.get(f"{suite.url}/openapi.json").json()
    layers = document["components"]["schemas"]["PipelineOptions"]["properties"]["layers"]["anyOf"][0]
    assert layers["minItems"] == 1 and "pattern" in layers["items"]


@pytest.mark.parametrize(
    "spec",
    [
        {"options": {"seed": "5"}},  # a string is not an integer
        {"options": {"allow_random_weights": 1}},  # nor 1 a boolean
        {"options": {"layers": "layer3,layer4"}},  # the CLI's comma list is not the API's array
    ],
)
def test_a_spec_that_breaks_the_schema_is_refused(client: httpx.Client, sample_dir: Path, spec: Any) -> None:
    # was: pydantic's lax mode took them
    answer = client.post("/v1/jobs", files=images(sample_dir, 1), data={"spec": json.dumps(spec)})
    assert_problem(answer, 422, "invalid-spec")
    answer = client.post("/v1/jobs", json={**spec, "source": {"prefix": "imports/tenant-b/x/"}})
    assert_problem(answer, 422, "invalid-spec")


def test_a_relabel_body_that_breaks_the_schema_is_refused(client: httpx.Client, sample_dir: Path) -> None:
    # was: `"strict": 0` answered 202, as if false
    job = client.post("/v1/jobs", files=images(sample_dir, 1), data={"spec": json.dumps(LIGHT)}).json()
    try:
        answer = client.post(f"/v1/jobs/{job['id']}:relabel", json={"strict": 0})
        assert_problem(answer, 422, "invalid-request")
    finally:
        client.post(f"/v1/jobs/{job['id']}:cancel")


def test_a_malformed_multipart_body_is_a_documented_400_problem(client: httpx.Client) -> None:
    headers = {"Content-Type": "multipart/form-data; boundary=x"}
    nameless = b"--x\r\nContent-Type: text/plain\r\n\r\nhello\r\n--x--\r\n"
    body = assert_problem(client.post("/v1/jobs", content=nameless, headers=headers), 400, "bad-request")
    assert "name" in body["detail"] and "spec" in body["fix"]
