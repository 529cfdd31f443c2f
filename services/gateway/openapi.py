"""The OpenAPI document, completed where FastAPI cannot infer it, so generated clients work:

- the JSON body of `POST /v1/jobs` is written by hand (the route reads a raw request) and its
  pydantic schema carries its own `$defs`; those move to `components/schemas`, and every
  `#/$defs/...` reference points there, so no `$ref` dangles;
- every operation lists the problem answers it can give, as `application/problem+json` with the
  `ProblemDetails` schema, including FastAPI's validation answer (our handler sends problem+json,
  not FastAPI's default body), with the `Retry-After` of 429 and 503 answers;
- links (OpenAPI 3 `links`) from every answer that names a job to the operations on that job,
  so clients, and schemathesis' stateful phase, can follow a job from its submission or a list.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI

from services.gateway.problems import MEDIA_TYPE

PROBLEM_REF = {"$ref": "#/components/schemas/ProblemDetails"}

RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}

LOCATION = {
    "Location": {
        "description": "The new job: `/v1/jobs/{id}`.",
        "required": True,
        "schema": {"type": "string"},
    }
}

# Answers beyond the common ones, by (method, path template). 409: the job is not in a state
# for it; 413: the body is over a limit; 400: a body that cannot be parsed; 429: a quota;
# 503: Redis or object storage is down (with Retry-After).
EXTRA_ANSWERS: dict[tuple[str, str], tuple[int, ...]] = {
    ("post", "/v1/jobs"): (400, 409, 413, 415, 429),
    ("post", "/v1/jobs/{job_id}:cancel"): (409,),
    ("post", "/v1/jobs/{job_id}:relabel"): (400, 409, 413, 429),
    ("delete", "/v1/jobs/{job_id}"): (409,),
    ("get", "/v1/jobs/{job_id}/hierarchy"): (409,),
    ("get", "/v1/jobs/{job_id}/clusters/{cluster_id}"): (409,),
    ("get", "/v1/jobs/{job_id}/neurons/{layer}/{channel}"): (409,),
    ("get", "/v1/jobs/{job_id}/artifacts"): (409,),
    ("get", "/ui/api/jobs/{job_id}/summary"): (409,),
    ("get", "/ui/api/jobs/{job_id}/children"): (409,),
    ("get", "/ui/api/jobs/{job_id}/search"): (409,),
    ("get", "/ui/api/jobs/{job_id}/concepts/{cluster_id}"): (409,),
    ("get", "/ui/api/jobs/{job_id}/concepts/{cluster_id}/images"): (409,),
    ("get", "/ui/api/jobs/{job_id}/neurons/{layer}/{channel}"): (409,),
    ("get", "/readyz"): (503,),
    # a pickled checkpoint is 415; an unreadable multipart body 400
    ("post", "/v1/models"): (400, 413, 415),
    # a body that is not JSON: 400; a job of another tenant or none: 404; one not finished: 409
    ("post", "/v1/comparisons"): (400, 404, 409),
    # the comparison view: one of its two jobs is no longer finished (409)
    ("get", "/ui/api/comparisons/{comparison_id}/summary"): (409,),
    ("get", "/ui/api/comparisons/{comparison_id}/children"): (409,),
    ("get", "/ui/api/comparisons/{comparison_id}/changed"): (409,),
    ("get", "/ui/api/comparisons/{comparison_id}/concepts/{cluster_id}"): (409,),
    # a multi-model job's results: the job is not finished yet (409)
    ("get", "/v1/jobs/{job_id}/models"): (409,),
    ("get", "/v1/jobs/{job_id}/models/{key}/hierarchy"): (409,),
    ("get", "/v1/jobs/{job_id}/comparison"): (409,),
    # a multi-model job's comparison view: the job is not finished yet (409)
    ("get", "/ui/api/jobs/{job_id}/comparisons/{key}/summary"): (409,),
    ("get", "/ui/api/jobs/{job_id}/comparisons/{key}/children"): (409,),
    ("get", "/ui/api/jobs/{job_id}/comparisons/{key}/changed"): (409,),
    ("get", "/ui/api/jobs/{job_id}/comparisons/{key}/concepts/{cluster_id}"): (409,),
}
# Operations that touch neither Redis nor object storage: no 503.
NO_DEPENDENCY = {("get", "/v1/webhooks/secret")}

# Where a job's id can be read from an answer: (method, path, status) -> JSON pointer.
JOB_ID_IN = {
    ("post", "/v1/jobs", "202"): "$response.body#/id",
    ("get", "/v1/jobs", "200"): "$response.body#/jobs/0/id",
    ("get", "/v1/jobs/{job_id}", "200"): "$response.body#/id",
    ("post", "/v1/jobs/{job_id}:cancel", "202"): "$response.body#/id",
    ("post", "/v1/jobs/{job_id}:relabel", "202"): "$response.body#/id",
}
# Where a model's id can be read from an answer.
MODEL_ID_IN = {
    ("post", "/v1/models", "201"): "$response.body#/id",
    ("get", "/v1/models", "200"): "$response.body#/items/0/id",
    ("get", "/v1/models/{model_id}", "200"): "$response.body#/id",
}
# Where a comparison's id can be read from an answer.
COMPARISON_ID_IN = {
    ("post", "/v1/comparisons", "201"): "$response.body#/id",
    ("get", "/v1/comparisons/{comparison_id}", "200"): "$response.body#/id",
}
# And the other path parameters, beside the job's (the request's): from the hierarchy.
IN_MODELS = {"key": "$response.body#/models/1/key", "cluster_id": "$response.body#/concepts/0/id"}
IN_HIERARCHY = {
    "cluster_id": "$response.body#/clusters/0/id",
    "image_id": "$response.body#/images/0/id",
    "layer": "$response.body#/layers/0/name",
    "channel": "$response.body#/clusters/0/neurons/0/channel",
}


def install(app: FastAPI) -> None:
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            hoist_defs(document)
            add_problem_answers(document)
            add_links(document)
            document["paths"]["/v1/jobs"]["post"]["responses"]["202"]["headers"] = LOCATION
            model_location = {
                "Location": {**LOCATION["Location"], "description": "The new model: `/v1/models/{id}`."}
            }
            document["paths"]["/v1/models"]["post"]["responses"]["201"]["headers"] = model_location
            comparison_location = {
                "Location": {**LOCATION["Location"], "description": "The comparison: `/v1/comparisons/{id}`."}
            }
            document["paths"]["/v1/comparisons"]["post"]["responses"]["201"]["headers"] = comparison_location
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def hoist_defs(document: dict[str, Any]) -> None:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for name, schema in node.pop("$defs", {}).items():
                schemas.setdefault(name, schema)
                walk(schema)
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                node["$ref"] = "#/components/schemas/" + ref.removeprefix("#/$defs/")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)


def add_problem_answers(document: dict[str, Any]) -> None:
    for path, operations in document["paths"].items():
        if not path.startswith(("/v1/", "/ui/api/")):
            continue
        for method, operation in operations.items():
            statuses = {401, 422}
            if "{job_id}" in path or "{model_id}" in path or "{comparison_id}" in path:
                statuses.add(404)
            if (method, path) not in NO_DEPENDENCY:
                statuses.add(503)
            statuses.update(EXTRA_ANSWERS.get((method, path), ()))
            add_answers(operation, statuses)
    add_answers(document["paths"]["/readyz"]["get"], {503})
    schemas = document["components"]["schemas"]
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)


def add_answers(operation: dict[str, Any], statuses: set[int]) -> None:
    answers = operation.setdefault("responses", {})
    for status in sorted(statuses):
        answer = answers.setdefault(str(status), {"description": HTTPStatus(status).phrase})
        answer["content"] = {MEDIA_TYPE: {"schema": PROBLEM_REF}}
        if status in (429, 503):
            answer["headers"] = RETRY_AFTER


def add_links(document: dict[str, Any]) -> None:
    """From each answer that names a job, a link to every operation on that job alone, and from
    its hierarchy to the operations on one cluster, image or neuron of it."""
    paths = document["paths"]

    def targets(parameters: set[str]) -> list[tuple[str, dict[str, Any]]]:
        return [
            (operation["operationId"], operation)
            for path, operations in paths.items()
            for operation in operations.values()
            if {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"} == parameters
        ]

    for (method, path, status), pointer in JOB_ID_IN.items():
        links = paths[path][method]["responses"][status].setdefault("links", {})
        for operation_id, _ in targets({"job_id"}):
            links[operation_id] = {"operationId": operation_id, "parameters": {"job_id": pointer}}
    for (method, path, status), pointer in MODEL_ID_IN.items():
        links = paths[path][method]["responses"][status].setdefault("links", {})
        for operation_id, _ in targets({"model_id"}):
            links[operation_id] = {"operationId": operation_id, "parameters": {"model_id": pointer}}
    for (method, path, status), pointer in COMPARISON_ID_IN.items():
        links = paths[path][method]["responses"][status].setdefault("links", {})
        for operation_id, _ in targets({"comparison_id"}):
            links[operation_id] = {"operationId": operation_id, "parameters": {"comparison_id": pointer}}
    # a job of several models: from its models document to each model's operations (the second
    # model: the first, the baseline, has no comparison of its own) and to one concept of them
    links = paths["/v1/jobs/{job_id}/models"]["get"]["responses"]["200"].setdefault("links", {})
    for names in ({"key"}, {"key", "cluster_id"}):
        for operation_id, _ in targets({"job_id", *names}):
            parameters = {"job_id": "$request.path.job_id", **{n: IN_MODELS[n] for n in names}}
            links[operation_id] = {"operationId": operation_id, "parameters": parameters}
    links = paths["/v1/jobs/{job_id}/hierarchy"]["get"]["responses"]["200"].setdefault("links", {})
    for names in ({"cluster_id"}, {"image_id"}, {"layer", "channel"}):
        for operation_id, _ in targets({"job_id", *names}):
            parameters = {"job_id": "$request.path.job_id", **{n: IN_HIERARCHY[n] for n in names}}
            links[operation_id] = {"operationId": operation_id, "parameters": parameters}
