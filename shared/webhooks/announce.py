"""The job store's end-of-job hook: it queues one `webhooks.deliver` task per callback that asked
for the event. Task names only, so the gateway installs it without registering the task; the
task itself is in `shared.webhooks.tasks`, on the labelling workers."""

from __future__ import annotations

import time

from shared.jobs.job_public import job_public
from shared.jobs.jobstore import JobStore
from shared.jobs.queue import WEBHOOKS_DELIVER, get_app
from shared.webhooks.delivery import message, new_webhook_id


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
