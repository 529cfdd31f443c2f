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


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def test_every_reference_resolves() -> None:
    document = create_app().openapi()
    schemas = document["components"]["schemas"]
    refs = _refs(document)
    assert refs and all(ref.startswith("#/components/schemas/") for ref in refs), refs
    assert not [ref for ref in refs if ref.removeprefix("#/components/schemas/") not in schemas]
    body = document["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "$defs" not in body and "PipelineOptions" in str(body)


def test_every_operation_documents_its_problem_answers_as_problem_json() -> None:
    document = create_app().openapi()
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}}
    for path, operations in document["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            answers = operation["responses"]
            expected = {"401", "422"} | ({"404"} if "{job_id}" in path else set())
            assert expected <= set(answers), (method, path)
            for status in expected:
                assert answers[status]["content"] == problem, (method, path, status)
    submit = document["paths"]["/v1/jobs"]["post"]["responses"]
    assert {"409", "413", "415", "422"} <= set(submit)
    assert "409" in document["paths"]["/v1/jobs/{job_id}:cancel"]["post"]["responses"]
    assert "HTTPValidationError" not in document["components"]["schemas"]
