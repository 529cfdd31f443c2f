"""The OpenAPI document names every answer's type, so a generated client gets typed objects."""

from __future__ import annotations

from typing import Any

from services.gateway.main import create_app


def answer_schema(document: dict[str, Any], path: str, method: str = "get") -> dict[str, Any]:
    answer = document["paths"][path][method]["responses"]
    ok = answer.get("200") or answer.get("202")
    schema: dict[str, Any] = ok["content"]["application/json"]["schema"]
    return schema


def test_results_and_job_reports_are_named_types() -> None:
    document = create_app().openapi()
    schemas = document["components"]["schemas"]
    assert answer_schema(document, "/v1/jobs/{job_id}/hierarchy") == {
        "$ref": "#/components/schemas/Hierarchy"
    }
    assert answer_schema(document, "/v1/jobs/{job_id}/clusters/{cluster_id}") == {
        "$ref": "#/components/schemas/Cluster"
    }
    assert answer_schema(document, "/v1/jobs/{job_id}/neurons/{layer}/{channel}")["$ref"].endswith(
        "NeuronPublic"
    )
    job = schemas["JobPublic"]["properties"]
    for field, model in (
        ("labelling", "Labelling"),
        ("uncertainty", "UncertaintySummary"),
        ("error", "ProblemDetails"),
    ):
        assert {"$ref": f"#/components/schemas/{model}"} in job[field]["anyOf"], field
    cluster = schemas["Cluster"]["properties"]
    assert "Neuron" in str(cluster["neurons"]) and "ClusterUncertainty" in str(cluster["uncertainty"])
    assert schemas["Neuron"]["properties"]["evidence"]["anyOf"][0]["$ref"].endswith("Evidence")
