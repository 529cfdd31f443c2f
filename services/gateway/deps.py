"""Dependencies of the routes, as `Annotated` aliases. The pure ones are `async` so they run on
the event loop; `get_job` reads Redis, so FastAPI runs it in the thread pool."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from services.gateway.problems import Problem
from services.gateway.settings import GatewaySettings
from shared.jobs.jobstore import JobRecord, JobStore
from shared.observability import logs
from shared.settings import InfraSettings
from shared.storage.stores import S3Store


@dataclass
class Services:
    """What the gateway talks to, built once at startup."""

    infra: InfraSettings
    settings: GatewaySettings
    store: S3Store
    jobs: JobStore


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_settings(services: ServicesDep) -> GatewaySettings:
    return services.settings


async def get_store(services: ServicesDep) -> S3Store:
    return services.store


async def get_jobs(services: ServicesDep) -> JobStore:
    return services.jobs


SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
StoreDep = Annotated[S3Store, Depends(get_store)]
JobsDep = Annotated[JobStore, Depends(get_jobs)]

LOCAL_TENANT = "local"


def hash_key(key: str) -> str:
    """API keys are stored as their sha256: a leaked settings file leaks no key."""
    return hashlib.sha256(key.encode()).hexdigest()


async def get_tenant(request: Request, settings: SettingsDep) -> str:
    """The caller's tenant, from `Authorization: Bearer KEY`; 401 without a known key."""
    if settings.auth_disabled:
        logs.bind(tenant=LOCAL_TENANT)
        return LOCAL_TENANT
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    tenant = settings.api_keys.get(hash_key(key.strip())) if scheme.lower() == "bearer" and key else None
    if tenant is None:
        raise Problem(
            401,
            "unauthorized",
            "A valid API key is required.",
            fix="Send `Authorization: Bearer <key>`.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    logs.bind(tenant=tenant)
    return tenant


TenantDep = Annotated[str, Depends(get_tenant)]


def get_job(job_id: str, tenant: TenantDep, jobs: JobsDep) -> JobRecord:
    """The caller's job; another tenant's job is as absent as one that never existed."""
    record = jobs.get(job_id) if len(job_id) == 32 and job_id.isalnum() else None
    if record is None or record.tenant != tenant:
        raise Problem(404, "not-found", f"No job {job_id}.")
    return record


JobDep = Annotated[JobRecord, Depends(get_job)]
