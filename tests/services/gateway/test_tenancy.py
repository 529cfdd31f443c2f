"""Two-tenant authorisation matrix over EVERY route of the gateway.

Each route the app serves (from `app.routes`, hidden ones included) must be listed below: as
public (it holds no tenant's data), as tenant-wide, or as a route on one job. For every job
route, against the real suite: tenant B gets the same 404 for tenant A's job as for a job that
never existed (never 200 or 403, which would tell it exists) and A's job is unchanged; a caller
without a valid key gets 401; and A itself gets an answer that is not 401/404, so the request
was really routed. A route added without a line here fails `test_every_route_is_in_the_matrix`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import iter_route_contexts

from neuron_atlas_client.options import PipelineOptions
from services.gateway.main import create_app
from services.gateway.methods import endpoints
from tests.explorer.test_ui_comparison import UI_COMPARISON_ROUTES
from tests.integrations.test_comparisons import COMPARISON_ROUTES
from tests.integrations.test_multi_model_suite import UI_JOB_COMPARISON_ROUTES
from tests.services.gateway.helpers import finished_job, wait_for
from tests.services.gateway.test_api import LIGHT, PROBLEM, images, submit

# Routes that hold no tenant's data, each with why: answered without a key.
PUBLIC = {
    ("GET", "/healthz"): "liveness",
    ("GET", "/readyz"): "readiness of Redis and the bucket",
    ("GET", "/openapi.json"): "the API's description",
    ("GET", "/docs"): "Swagger UI page",
    ("GET", "/docs/oauth2-redirect"): "Swagger UI helper page",
    ("GET", "/redoc"): "ReDoc page",
    ("GET", "/docs/assets/{name}"): "Swagger UI's and ReDoc's scripts and styles, from the package",
    ("GET", "/metrics"): "Prometheus counters by route template, no tenant or job in them",
    ("GET", "/ui"): "redirect to /ui/",
    ("GET", "/ui/"): "the explorer's page (its data come from /ui/api, behind the keys)",
    ("GET", "/ui/assets/{name}"): "the explorer's script and style",
    ("GET", "/ui/comparisons/{comparison_id}"): "redirect to the explorer's comparison route (data: /ui/api)",
}


@dataclass(frozen=True)
class Call:
    """How to call a route for the matrix: method, path with `{job}` and the result's own ids
    filled in, and the keyword arguments of the request (a body)."""

    method: str
    path: str
    body: dict[str, Any] | None = None
    owner_ok: tuple[int, ...] = (200,)  # what tenant A itself may get


# Tenant-wide routes: no job in the path; checked for 401 and for what B sees of A's.
TENANT_WIDE = {
    ("GET", "/v1/jobs"),
    ("POST", "/v1/jobs"),
    ("GET", "/v1/webhooks/secret"),
    ("GET", "/v1/models"),
    ("POST", "/v1/models"),
}

# Every route on one job. `{job}`, `{cluster}`, `{layer}`, `{channel}`, `{image}` are filled in
# from tenant A's finished job. Routes that change the job come last (DELETE at the very end).
JOB_ROUTES: dict[tuple[str, str], Call] = {
    ("GET", "/v1/jobs/{job_id}"): Call("GET", "/v1/jobs/{job}"),
    ("GET", "/v1/jobs/{job_id}/hierarchy"): Call("GET", "/v1/jobs/{job}/hierarchy"),
    ("GET", "/v1/jobs/{job_id}/clusters/{cluster_id}"): Call("GET", "/v1/jobs/{job}/clusters/{cluster}"),
    ("GET", "/v1/jobs/{job_id}/neurons/{layer}/{channel}"): Call(
        "GET", "/v1/jobs/{job}/neurons/{layer}/{channel}"
    ),
    ("GET", "/v1/jobs/{job_id}/artifacts"): Call("GET", "/v1/jobs/{job}/artifacts"),
    # a multi-model job's routes (tests/integrations/test_multi_model_suite.py): A's job has one
    # model, whose own hierarchy answers, and no multi-model result or comparison
    ("GET", "/v1/jobs/{job_id}/models/{key}/hierarchy"): Call(
        "GET", "/v1/jobs/{job}/models/{model}/hierarchy"
    ),
    ("GET", "/v1/jobs/{job_id}/models"): Call("GET", "/v1/jobs/{job}/models", owner_ok=(404,)),
    ("GET", "/v1/jobs/{job_id}/comparison"): Call("GET", "/v1/jobs/{job}/comparison", owner_ok=(404,)),
    ("GET", "/v1/jobs/{job_id}/deliveries"): Call("GET", "/v1/jobs/{job}/deliveries"),
    ("GET", "/ui/api/jobs/{job_id}/summary"): Call("GET", "/ui/api/jobs/{job}/summary"),
    ("GET", "/ui/api/jobs/{job_id}/children"): Call("GET", "/ui/api/jobs/{job}/children"),
    ("GET", "/ui/api/jobs/{job_id}/search"): Call("GET", "/ui/api/jobs/{job}/search?q=a"),
    ("GET", "/ui/api/jobs/{job_id}/concepts/{cluster_id}"): Call(
        "GET", "/ui/api/jobs/{job}/concepts/{cluster}"
    ),
    ("GET", "/ui/api/jobs/{job_id}/concepts/{cluster_id}/images"): Call(
        "GET", "/ui/api/jobs/{job}/concepts/{cluster}/images"
    ),
    ("GET", "/ui/api/jobs/{job_id}/neurons/{layer}/{channel}"): Call(
        "GET", "/ui/api/jobs/{job}/neurons/{layer}/{channel}"
    ),
    ("GET", "/ui/api/jobs/{job_id}/thumbs/{image_id}"): Call("GET", "/ui/api/jobs/{job}/thumbs/{image}"),
    ("POST", "/v1/jobs/{job_id}:cancel"): Call("POST", "/v1/jobs/{job}:cancel", owner_ok=(409,)),
    ("POST", "/v1/jobs/{job_id}:relabel"): Call(
        "POST", "/v1/jobs/{job}:relabel", {"offline": True}, owner_ok=(202,)
    ),
    ("DELETE", "/v1/jobs/{job_id}"): Call("DELETE", "/v1/jobs/{job}", owner_ok=(204,)),
}


# Every route on one registered model, `{model}` filled in with tenant A's (DELETE last).
MODEL_ROUTES: dict[tuple[str, str], Call] = {
    ("GET", "/v1/models/{model_id}"): Call("GET", "/v1/models/{model}"),
    ("GET", "/v1/models/{model_id}/layers"): Call("GET", "/v1/models/{model}/layers"),
    ("DELETE", "/v1/models/{model_id}"): Call("DELETE", "/v1/models/{model}", owner_ok=(204,)),
}


@functools.cache
def tiny_model_file() -> Path:
    """A small registered model's weights: timm's test ConvNeXt, 3 classes."""
    import tempfile

    import timm
    from safetensors.torch import save_file

    path = Path(tempfile.mkdtemp(prefix="tenancy-")) / "tiny.safetensors"
    save_file(timm.create_model("test_convnext", num_classes=3).state_dict(), str(path))
    return path


def upload_tiny_model(client: httpx.Client) -> httpx.Response:
    path = tiny_model_file()
    return client.post(
        "/v1/models",
        files={"weights": (path.name, path.read_bytes(), "application/octet-stream")},
        data={"architecture": "timm:test_convnext"},
    )


def app_routes() -> set[tuple[str, str]]:
    """(method, path template) of every route the gateway serves, hidden ones included."""
    app = create_app()
    others = [r for r in iter_route_contexts(app.routes) if r.path_format is None or not r.methods]
    assert not others, f"mounts or websockets, which the matrix cannot call yet: {others}"
    return {
        (method, template)
        for template, methods in endpoints(app.routes)
        for method in methods
        if method != "HEAD"  # Starlette's automatic HEAD beside GET
    }


def test_every_route_is_in_the_matrix() -> None:
    routes = app_routes()
    # a comparison's routes: no key 401, another tenant 404 on a comparison or on jobs not its own
    # (tests/integrations/test_comparisons.py, which makes a comparison on the suite, and
    # tests/explorer/test_ui_comparison.py for the explorer's comparison view, and
    # tests/integrations/test_multi_model_suite.py for a multi-model job's, which needs one)
    listed = (
        set(PUBLIC)
        | TENANT_WIDE
        | set(JOB_ROUTES)
        | set(MODEL_ROUTES)
        | COMPARISON_ROUTES
        | UI_COMPARISON_ROUTES
        | UI_JOB_COMPARISON_ROUTES
    )
    uncovered = sorted(routes - listed)
    assert not uncovered, (
        "Routes missing from the two-tenant authorisation matrix (tests/services/gateway/"
        "test_tenancy.py): add each to JOB_ROUTES, TENANT_WIDE (with a check) or PUBLIC (with why "
        "it holds no tenant's data); a route on another kind of resource (a model, say) needs the "
        "same checks as JOB_ROUTES: B gets 404 on A's, no key gets 401, A's own is routed:\n"
        + "\n".join(f"  {m} {p}" for m, p in uncovered)
    )
    assert not sorted(listed - routes), f"listed but no longer served: {sorted(listed - routes)}"


@pytest.fixture(scope="module")
def finished(suite: Any, sample_dir: Path) -> dict[str, str]:
    """Tenant A's finished job, and ids inside it for the routes' other parameters."""
    with httpx.Client(base_url=suite.url, headers=suite.headers("tenant-a"), timeout=60) as a:
        job = finished_job(a, sample_dir)
        hierarchy = a.get(f"/v1/jobs/{job['id']}/hierarchy").raise_for_status().json()
    cluster = hierarchy["clusters"][0]
    neuron = next(
        (n for c in hierarchy["clusters"] for n in c["neurons"]),
        {"layer": hierarchy["layers"][0]["name"], "channel": 0},
    )
    return {
        "job": job["id"],
        "cluster": cluster["id"],
        "layer": neuron["layer"],
        "channel": str(neuron["channel"]),
        "image": cluster["images"][0],
        "model": PipelineOptions.model_validate(hierarchy["options"]).target_models()[0].resolved_key,
    }


def request(client: httpx.Client, call: Call, ids: dict[str, str]) -> httpx.Response:
    return client.request(call.method, call.path.format(**ids), json=call.body)


def snapshot(client: httpx.Client, job_id: str) -> tuple[Any, ...]:
    job = client.get(f"/v1/jobs/{job_id}").raise_for_status().json()
    return job["status"], job["finished_at"], job["labelling"]


def test_another_tenant_gets_404_on_every_job_route_and_changes_nothing(
    suite: Any, finished: dict[str, str]
) -> None:
    never = {**finished, "job": "0" * 32}
    anonymous = httpx.Client(base_url=suite.url, timeout=60)
    wrong_key = httpx.Client(base_url=suite.url, headers={"Authorization": "Bearer nope"}, timeout=60)
    a = httpx.Client(base_url=suite.url, headers=suite.headers("tenant-a"), timeout=60)
    b = httpx.Client(base_url=suite.url, headers=suite.headers("tenant-b"), timeout=60)
    failures: list[str] = []
    with anonymous, wrong_key, a, b:
        before = snapshot(a, finished["job"])
        for (method, template), call in JOB_ROUTES.items():
            name = f"{method} {template}"
            for who, client in (("no key", anonymous), ("wrong key", wrong_key)):
                if (status := request(client, call, finished).status_code) != 401:
                    failures.append(f"{name}: {who} got {status}, not 401")
            theirs, absent = request(b, call, finished), request(b, call, never)
            if theirs.status_code != 404 or not theirs.headers["content-type"].startswith(PROBLEM):
                failures.append(f"{name}: tenant B got {theirs.status_code} for A's job, not a 404 problem")
            elif theirs.json()["type"] != absent.json()["type"] or absent.status_code != 404:
                failures.append(f"{name}: A's job answers B unlike a job that never existed")
            if snapshot(a, finished["job"]) != before:
                failures.append(f"{name}: tenant B's call changed A's job")
            if (call.method, call.path) == ("DELETE", "/v1/jobs/{job}"):
                continue  # A's own delete ends the test below
            mine = request(a, call, finished)
            if mine.status_code not in call.owner_ok:
                failures.append(f"{name}: tenant A got {mine.status_code} on its own job ({mine.text[:200]})")
            if call.owner_ok == (202,):  # the relabel runs: let it finish before the next route
                wait_for(a, f"/v1/jobs/{finished['job']}", {"succeeded"})
                before = snapshot(a, finished["job"])
        if (status := request(a, JOB_ROUTES[("DELETE", "/v1/jobs/{job_id}")], finished).status_code) != 204:
            failures.append(f"DELETE /v1/jobs/{{job_id}}: tenant A got {status} deleting its own job")
    assert not failures, "\n".join(failures)


def test_tenant_wide_routes_need_a_key_and_show_only_the_callers_own(suite: Any, sample_dir: Path) -> None:
    checks: dict[tuple[str, str], Callable[[httpx.Client], httpx.Response]] = {
        ("GET", "/v1/jobs"): lambda c: c.get("/v1/jobs", params={"page_size": 100}),
        ("POST", "/v1/jobs"): lambda c: submit(
            c, images(sample_dir, 1), LIGHT, headers={"Idempotency-Key": "x"}
        ),
        ("GET", "/v1/webhooks/secret"): lambda c: c.get("/v1/webhooks/secret"),
        ("GET", "/v1/models"): lambda c: c.get("/v1/models", params={"page_size": 100}),
        ("POST", "/v1/models"): upload_tiny_model,
    }
    assert set(checks) == TENANT_WIDE
    with (
        httpx.Client(base_url=suite.url, timeout=60) as anonymous,
        httpx.Client(base_url=suite.url, headers=suite.headers("tenant-a"), timeout=60) as a,
        httpx.Client(base_url=suite.url, headers=suite.headers("tenant-b"), timeout=60) as b,
    ):
        for route, call in checks.items():
            assert call(anonymous).status_code == 401, route
        # the same Idempotency-Key gives each tenant its own job, never the other's
        mine, theirs = checks[("POST", "/v1/jobs")](a).json(), checks[("POST", "/v1/jobs")](b).json()
        assert mine["id"] != theirs["id"]
        listed_b = {j["id"] for j in checks[("GET", "/v1/jobs")](b).json()["jobs"]}
        assert mine["id"] not in listed_b and theirs["id"] in listed_b
        secrets = [checks[("GET", "/v1/webhooks/secret")](c).json()["secret"] for c in (a, b)]
        assert secrets[0] != secrets[1]
        for client, job in ((a, mine), (b, theirs)):
            client.post(f"/v1/jobs/{job['id']}:cancel")
        model = checks[("POST", "/v1/models")](a).json()
        listed_b = {m["id"] for m in checks[("GET", "/v1/models")](b).json()["items"]}
        assert model["id"] not in listed_b
        a.delete(f"/v1/models/{model['id']}")


def test_another_tenant_gets_404_on_every_model_route_and_changes_nothing(suite: Any) -> None:
    anonymous = httpx.Client(base_url=suite.url, timeout=60)
    wrong_key = httpx.Client(base_url=suite.url, headers={"Authorization": "Bearer nope"}, timeout=60)
    a = httpx.Client(base_url=suite.url, headers=suite.headers("tenant-a"), timeout=120)
    b = httpx.Client(base_url=suite.url, headers=suite.headers("tenant-b"), timeout=60)
    failures: list[str] = []
    with anonymous, wrong_key, a, b:
        uploaded = upload_tiny_model(a)
        assert uploaded.status_code == 201, uploaded.text
        ids, never = {"model": uploaded.json()["id"]}, {"model": "0" * 32}
        before = a.get(f"/v1/models/{ids['model']}").json()
        for (method, template), call in MODEL_ROUTES.items():
            name = f"{method} {template}"
            for who, client in (("no key", anonymous), ("wrong key", wrong_key)):
                if (status := request(client, call, ids).status_code) != 401:
                    failures.append(f"{name}: {who} got {status}, not 401")
            theirs, absent = request(b, call, ids), request(b, call, never)
            if theirs.status_code != 404 or not theirs.headers["content-type"].startswith(PROBLEM):
                failures.append(f"{name}: tenant B got {theirs.status_code} for A's model, not a 404 problem")
            elif theirs.json()["type"] != absent.json()["type"] or absent.status_code != 404:
                failures.append(f"{name}: A's model answers B unlike a model that never existed")
            if a.get(f"/v1/models/{ids['model']}").json() != before:
                failures.append(f"{name}: tenant B's call changed A's model")
            if (status := request(a, call, ids).status_code) not in call.owner_ok:
                failures.append(f"{name}: tenant A got {status} on its own model")
    assert not failures, "\n".join(failures)


def test_public_routes_answer_without_a_key(suite: Any) -> None:
    with httpx.Client(base_url=suite.url, timeout=60) as anonymous:
        for method, template in PUBLIC:
            name = "swagger-ui.css" if template.startswith("/docs") else "app.js"
            # the redirect to the explorer's comparison route reads nothing: any id answers 307
            path = template.format(name=name, comparison_id="0" * 32)
            answer = anonymous.request(method, path)
            assert answer.status_code in (200, 307), (method, path, answer.status_code)
