"""The `webhooks.deliver` task and the job store's end-of-job hook that queues it (see
`shared.webhooks` for why a task, on the labelling workers). The labelling worker imports this
module to run the task; the gateway and every worker install `announce` on their job store."""

from __future__ import annotations

import logging
import time
from typing import Any

from shared.job_public import job_public
from shared.jobstore import JobStore, now
from shared.metrics import WEBHOOK_DELIVERIES
from shared.queue import WEBHOOKS_DELIVER, get_app
from shared.webhooks import deliver, development, get_webhook_settings, message, new_webhook_id, next_delay
from shared.webhooks import tenant_secret as derive_secret

log = logging.getLogger(__name__)


def announce(jobs: JobStore, job_id: str, status: str) -> None:
    """Queue one message per callback that asked for `job.{status}` (the end status)."""
    callbacks = jobs.callbacks(job_id)
    if not callbacks:
        return
    event = f"job.{status}"
    record = jobs.get(job_id)
    if record is None:
        return
    # Built once, so every attempt sends the same body: a few kB (status, progress, summaries).
    body = message(event, job_public(record).model_dump(mode="json"))
    for index, callback in enumerate(callbacks):
        if event in callback.get("events", ()):
            args = [job_id, index, event, new_webhook_id(), body]
            get_app().send_task(WEBHOOKS_DELIVER, args=args, kwargs={"attempt": 1, "first_at": time.time()})


@get_app().task(name=WEBHOOKS_DELIVER, bind=True, max_retries=None)
def webhooks_deliver(
    self: Any, job_id: str, index: int, event: str, webhook_id: str, body: str, attempt: int, first_at: float
) -> str:
    """One attempt; a failed one is retried after its back-off until the count or age bound."""
    from shared.tasks import job_store

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
