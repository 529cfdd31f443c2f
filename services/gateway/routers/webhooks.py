"""Webhooks: a job's delivery log, and the tenant's signing secret (see `shared.webhooks.delivery`)."""

from __future__ import annotations

from fastapi import APIRouter

from neuron_atlas_client.contracts.api import DeliveriesPublic, DeliveryAttempt, WebhookSecretPublic
from services.gateway.deps import JobDep, JobsDep, TenantDep
from shared.webhooks.delivery import get_webhook_settings, tenant_secret

router = APIRouter(tags=["webhooks"])


@router.get("/v1/jobs/{job_id}/deliveries", response_model=DeliveriesPublic)
def get_deliveries(job: JobDep, jobs: JobsDep) -> DeliveriesPublic:
    """Every attempt to deliver the job's webhooks, oldest first."""
    return DeliveriesPublic(deliveries=[DeliveryAttempt.model_validate(d) for d in jobs.deliveries(job.id)])


@router.get("/v1/webhooks/secret", response_model=WebhookSecretPublic)
async def get_webhook_secret(tenant: TenantDep) -> WebhookSecretPublic:
    """The secret that signs this tenant's webhooks (`webhook-signature`, Standard Webhooks)."""
    return WebhookSecretPublic(secret=tenant_secret(get_webhook_settings().signing_key, tenant))
