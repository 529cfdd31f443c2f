"""Errors as `application/problem+json` (RFC 9457): `type`, `title`, `status`, `detail`,
`instance`, plus `fix` (what the caller can do) and, for invalid input, `errors`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from neuron_atlas_client.contracts.problem import ProblemDetails
from neuron_atlas_client.errors import NeuronAtlasError
from services.gateway.methods import allowed_methods
from shared.jobs.dependencies import dependency_errors, unavailable_dependency

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
RETRY_AFTER_S = 10  # what a client waits before trying again when Redis or S3 is down


class Problem(Exception):
    """Raise from a route to answer with a problem document."""

    def __init__(
        self,
        status: int,
        kind: str,
        title: str,
        detail: str = "",
        fix: str = "",
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(title)
        self.status, self.kind, self.title, self.detail, self.fix = status, kind, title, detail, fix
        self.headers = headers or {}
        self.extra = extra

    def details(self, instance: str | None = None) -> ProblemDetails:
        return ProblemDetails.of(
            self.kind, self.title, self.detail, self.fix, status=self.status, instance=instance, **self.extra
        )


def problem_response(request: Request, problem: Problem) -> JSONResponse:
    body = problem.details(request.url.path).body()
    return JSONResponse(body, status_code=problem.status, headers=problem.headers, media_type=MEDIA_TYPE)


_STATUS_KINDS = {
    400: "bad-request",
    401: "unauthorized",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "content-too-large",
    415: "unsupported-media-type",
}


def install(app: FastAPI) -> None:
    """Every error the app can raise answers as problem+json."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = _STATUS_KINDS.get(exc.status_code, "http-error")
        headers, fix = dict(exc.headers or {}), ""
        if exc.status_code == 405:
            allowed = ", ".join(allowed_methods(request.app.routes, request.scope))
            headers["Allow"] = allowed
            fix = f"Use one of: {allowed}."
        return problem_response(
            request, Problem(exc.status_code, kind, str(exc.detail), fix=fix, headers=headers)
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        return problem_response(
            request, Problem(422, "invalid-request", "The request is invalid.", errors=errors)
        )

    @app.exception_handler(ValidationError)
    async def _spec(request: Request, exc: ValidationError) -> JSONResponse:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:5])
        return problem_response(
            request, Problem(422, "invalid-spec", "The job spec is invalid.", detail, errors=errors)
        )

    @app.exception_handler(NeuronAtlasError)
    async def _input(request: Request, exc: NeuronAtlasError) -> JSONResponse:
        return problem_response(
            request, Problem(422, exc.kind, "The submission cannot be used.", exc.problem, exc.fix)
        )

    async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
        # A dependency that is down is not our bug: 503 with a time to come back, and never the
        # exception's text (it names hosts and keys).
        dependency = unavailable_dependency(exc)
        assert dependency is not None
        what = (request.method, request.url.path, dependency.name, type(exc).__name__)
        log.warning("%s %s: %s unavailable (%s)", *what)
        return problem_response(
            request,
            Problem(
                503,
                f"{dependency.kind}-unavailable",
                f"The service cannot reach {dependency.name} right now.",
                fix="Try again shortly; nothing was created by this request.",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            ),
        )

    # Registered by class, so they answer inside the app (an `Exception` handler answers from
    # the outermost middleware, after the request log, and the server then drops the connection).
    for kind in dependency_errors():
        app.add_exception_handler(kind, _unavailable)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(request, Problem(500, "internal", "Internal server error."))
