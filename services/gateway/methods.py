"""Which methods a path allows, for the `Allow` header of a 405.

Starlette answers a wrong method with the methods of the *first* route whose path matches, so a
path served by two routes (GET and DELETE `/v1/jobs/{id}`) named only one of them. And
`/v1/jobs/{job_id}` also matched `/v1/jobs/X:cancel` (a path parameter takes any character but
`/`), so `PUT /v1/jobs/X:cancel` answered `Allow: GET`. The job id's convertor below refuses
`:`, so the custom methods (`:cancel`, `:relabel`) match only their own routes, and the 405
handler lists the methods of every route whose path matches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from fastapi.routing import iter_route_contexts
from starlette.convertors import StringConvertor, register_url_convertor
from starlette.routing import BaseRoute, Match
from starlette.types import Scope


class JobIdConvertor(StringConvertor):
    """A job id: any character but `/` and `:` (`{job_id}:cancel` is another resource)."""

    regex = "[^/:]+"


register_url_convertor("job_id", JobIdConvertor())
# The path of a job's own routes; the OpenAPI document still shows `{job_id}`.
JOB_ID = "{job_id:job_id}"


def endpoints(routes: Sequence[BaseRoute]) -> Iterator[tuple[str, set[str]]]:
    """(path template, methods) of every route, those of included routers too (FastAPI keeps
    an included router as one entry of `app.routes`)."""
    for route in iter_route_contexts(routes):
        if route.path_format is not None and route.methods:
            yield route.path_format, set(route.methods)


def allowed_methods(routes: Sequence[BaseRoute], scope: Scope) -> list[str]:
    """Every method some route serves at the request's path, sorted."""
    probe = {**scope, "method": "\0"}  # a method no route has: a path match is then PARTIAL
    methods: set[str] = set()
    for route in iter_route_contexts(routes):
        if route.methods and route.matches(probe)[0] is Match.PARTIAL:
            methods |= set(route.methods)
    return sorted(methods)
