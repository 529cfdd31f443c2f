"""The OpenAPI document, completed where FastAPI cannot infer it, so generated clients work:

- the JSON body of `POST /v1/jobs` is written by hand (the route reads a raw request) and its
  pydantic schema carries its own `$defs`; those move to `components/schemas`, and every
  `#/$defs/...` reference points there, so no `$ref` dangles;
- every operation lists the problem answers it can give, as `application/problem+json` with the
  `ProblemDetails` schema, including FastAPI's validation answer (our handler sends problem+json,
  not FastAPI's default body).
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI

from services.gateway.problems import MEDIA_TYPE

PROBLEM_REF = {"$ref": "#/components/schemas/ProblemDetails"}

# Answers beyond the common ones, by (method, path template).
EXTRA_ANSWERS: dict[tuple[str, str], tuple[int, ...]] = {
    ("post", "/v1/jobs"): (409, 413, 415),
    ("post", "/v1/jobs/{job_id}:cancel"): (409,),
    ("post", "/v1/jobs/{job_id}:relabel"): (409,),
    ("delete", "/v1/jobs/{job_id}"): (409,),
    ("get", "/v1/jobs/{job_id}/hierarchy"): (409,),
    ("get", "/v1/jobs/{job_id}/clusters/{cluster_id}"): (409,),
    ("get", "/v1/jobs/{job_id}/neurons/{layer}/{channel}"): (409,),
    ("get", "/v1/jobs/{job_id}/artifacts"): (409,),
}


def install(app: FastAPI) -> None:
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            hoist_defs(document)
            add_problem_answers(document)
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
            if "{job_id}" in path:
                statuses.add(404)
            statuses.update(EXTRA_ANSWERS.get((method, path), ()))
            answers = operation.setdefault("responses", {})
            for status in sorted(statuses):
                answer = answers.setdefault(str(status), {"description": HTTPStatus(status).phrase})
                answer["content"] = {MEDIA_TYPE: {"schema": PROBLEM_REF}}
    schemas = document["components"]["schemas"]
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
