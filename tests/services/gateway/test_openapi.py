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


def test_quota_outage_and_parse_answers_are_documented_with_their_headers() -> None:
    document = create_app().openapi()
    submit = document["paths"]["/v1/jobs"]["post"]["responses"]
    assert {"400", "409", "413", "415", "422", "429", "503"} <= set(submit)
    assert "Location" in submit["202"]["headers"]
    for status in ("429", "503"):
        assert submit[status]["headers"]["Retry-After"]["required"] is True
    relabel = document["paths"]["/v1/jobs/{job_id}:relabel"]["post"]["responses"]
    assert {"400", "409", "413"} <= set(relabel)
    assert "503" in document["paths"]["/readyz"]["get"]["responses"]
    assert "503" not in document["paths"]["/v1/webhooks/secret"]["get"]["responses"]
    thumbs = document["paths"]["/ui/api/jobs/{job_id}/thumbs/{image_id}"]["get"]["responses"]["200"]
    assert list(thumbs["content"]) == ["image/webp"]


def test_links_lead_from_a_job_to_every_operation_on_it() -> None:
    document = create_app().openapi()
    paths = document["paths"]
    on_a_job = {
        op["operationId"]
        for operations in paths.values()
        for op in operations.values()
        if any(p["name"] == "job_id" for p in op.get("parameters", []))
    }
    created = set(paths["/v1/jobs"]["post"]["responses"]["202"]["links"])
    from_hierarchy = set(paths["/v1/jobs/{job_id}/hierarchy"]["get"]["responses"]["200"]["links"])
    from_models = set(paths["/v1/jobs/{job_id}/models"]["get"]["responses"]["200"]["links"])
    assert created | from_hierarchy | from_models == on_a_job
    for link in paths["/v1/jobs"]["get"]["responses"]["200"]["links"].values():
        assert link["parameters"] == {"job_id": "$response.body#/jobs/0/id"}
