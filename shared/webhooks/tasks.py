"""The `webhooks.deliver` task (see `shared.webhooks.delivery` for why a task, on the labelling workers).
The labelling worker imports this module to run the task; the end-of-job hook that queues it,
which the gateway and every worker install on their job store, is `shared.webhooks.announce`."""

from __future__ import annotations

import logging
import time
from typing import Any

from shared.jobs.jobstore import now
from shared.jobs.queue import WEBHOOKS_DELIVER, get_app
from shared.jobs.tasks import job_store
from shared.observability.metrics import WEBHOOK_DELIVERIES
from shared.webhooks.delivery import deliver, development, get_webhook_settings, next_delay
from shared.webhooks.delivery import tenant_secret as derive_secret

log = logging.getLogger(__name__)


@get_app().task(name=WEBHOOKS_DELIVER, bind=True, max_retries=None)
def webhooks_deliver(
    self: Any, job_id: str, index: int, event: str, webhook_id: str, body: str, attempt: int, first_at: float
) -> str:
    """One attempt; a failed one is retried after its back-off until the count or age bound."""
    settings, jobs = get_webhook_settings(), job_store()
    record, callbacks = jobs.get(job_id), jobs.callbacks(job_id)
    if record is None or index >= len(callbacks):
        return "gone"  # the job was deleted meanwhile
    url = callbacks[index]["url"]
    started = now()
    result = deliver(
        url,
        derive_secret(settings.signing_key, record.tenant),
        webhook_id,
        body,
        settings.timeout_s,
        development(),
    )
    delay = next_delay(settings, attempt, first_at, time.time()) if result.outcome == "failed" else None
    outcome = "retrying" if delay is not None else result.outcome
    jobs.add_delivery(
        job_id,
        {
            "webhook_id": webhook_id,
            "event": event,
            "url": url,
            "attempt": attempt,
            "at": started,
            "outcome": outcome,
            "status_code": result.status_code,
            "error": result.error,
            "duration_ms": result.duration_ms,
            "next_attempt_in_s": delay,
        },
    )
    WEBHOOK_DELIVERIES.labels(outcome).inc()
    log.info("webhook %s attempt %d to %s: %s", webhook_id, attempt, url, outcome)
    if delay is not None:
        kwargs = {"attempt": attempt + 1, "first_at": first_at}
        raise self.retry(args=[job_id, index, event, webhook_id, body], kwargs=kwargs, countdown=delay)
    return outcome
