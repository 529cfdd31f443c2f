"""The REST gateway: `uvicorn services.gateway.main:app`. No torch and no worker code here; the
gateway names tasks by string (`shared.jobs.queue`)."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from prometheus_fastapi_instrumentator import Instrumentator, metrics

from services.gateway import docs_pages, openapi, problems
from services.gateway.deps import Services
from services.gateway.limits import MULTIPART_OVERHEAD_BYTES, BodySizeLimit, PathLimit
from services.gateway.request_log import RequestLog
from services.gateway.routers import (
    comparisons,
    explorer,
    explorer_comparisons,
    explorer_job_comparisons,
    health,
    job_models,
    jobs,
    models,
    results,
    webhooks,
)
from services.gateway.security_headers import SecurityHeaders
from services.gateway.settings import check_auth_setting, get_gateway_settings
from shared.jobs.jobstore import JobStore
from shared.observability.logs import configure_logging
from shared.settings import get_infra_settings
from shared.storage.stores import S3Store, make_s3_client
from shared.webhooks.announce import announce
from shared.webhooks.delivery import get_webhook_settings

if TYPE_CHECKING:
    from minio import Minio

log = logging.getLogger(__name__)
CONVERTOR = re.compile(r"\{(\w+):\w+\}")  # `{name:convertor}` in a route's path


def build_services() -> Services:
    """Settings are checked here, so a misconfigured gateway refuses to start."""
    infra, settings = get_infra_settings(), get_gateway_settings()
    check_auth_setting(infra, settings)
    if settings.auth_disabled:
        log.warning("authentication is OFF: every caller is tenant 'local' (development only)")

    def client(endpoint: str) -> Minio:
        return make_s3_client(
            endpoint,
            infra.s3_access_key,
            infra.s3_secret_key,
            infra.s3_region,
            infra.s3_connect_timeout_s,
            infra.s3_read_timeout_s,
            infra.s3_retries,
        )

    get_webhook_settings()  # refuses a placeholder signing key outside development

    store = S3Store(client(infra.s3_endpoint), infra.s3_bucket, presigner=client(infra.public_endpoint))
    return Services(infra, settings, store, JobStore.from_url(infra.redis_url, on_end=announce))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    if not hasattr(app.state, "services"):  # tests may put their own (and keep their logging)
        configure_logging("gateway", logging.INFO, get_infra_settings().log_format)
        app.state.services = build_services()
        await run_in_threadpool(ensure_bucket, app.state.services.store)
    yield


def ensure_bucket(store: S3Store) -> None:
    """Create the bucket on a fresh S3 server, so no separate setup step is needed. Where it
    can't be created now (S3 down, no permission), the gateway still starts and `/readyz` says
    what is wrong until it is fixed."""
    try:
        store.ensure_bucket()
    except Exception as exc:  # any failure: readiness reports it
        log.warning("could not make sure bucket %s exists: %s", store.bucket, type(exc).__name__)


def without_convertors(record: Callable[[metrics.Info], None]) -> Callable[[metrics.Info], None]:
    """The default metrics, labelled `/v1/jobs/{job_id}` rather than the route's
    `/v1/jobs/{job_id:job_id}` (the convertor keeps `:cancel` apart, see `methods.py`)."""

    def instrumentation(info: metrics.Info) -> None:
        info.modified_handler = CONVERTOR.sub(r"{\1}", info.modified_handler)
        record(info)

    return instrumentation


def create_app() -> FastAPI:
    app = FastAPI(
        title="Neuron Atlas",
        version="1",
        summary="Which neurons of a vision model respond to which concepts of your images.",
        lifespan=lifespan,
        docs_url=None,  # served from the package, not a CDN (docs_pages)
        redoc_url=None,
    )
    problems.install(app)
    openapi.install(app)
    # Prometheus: requests and latency by route template (`handler`), at /metrics.
    instrumentator = Instrumentator(excluded_handlers=["/metrics"])
    if default := metrics.default():
        instrumentator.add(without_convertors(default))
    instrumentator.instrument(app).expose(app, include_in_schema=False)
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(models.router)
    app.include_router(results.router)
    app.include_router(job_models.router)
    app.include_router(webhooks.router)
    app.include_router(comparisons.router)
    app.include_router(explorer.router)
    app.include_router(explorer_comparisons.router)
    app.include_router(explorer_job_comparisons.router)
    app.include_router(docs_pages.router)
    settings = get_gateway_settings()
    # Model uploads have their own limit: a checkpoint can be larger than a batch of images.
    model_upload_limit = PathLimit(
        settings.max_model_bytes + MULTIPART_OVERHEAD_BYTES,
        "Ask the operator to raise GATEWAY_MAX_MODEL_BYTES, or import the model from your bucket "
        "area (POST /v1/models with a JSON body).",
    )
    app.add_middleware(
        BodySizeLimit, max_bytes=settings.max_request_bytes, per_path={"/v1/models": model_upload_limit}
    )
    app.add_middleware(SecurityHeaders)
    app.add_middleware(RequestLog)  # outermost: it logs even the requests the limit refuses
    return app


app = create_app()
