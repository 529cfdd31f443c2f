"""A real Celery worker of the suite's app (shared.jobs.queue: its settings, its Heartbeat step) with
a plain test task and a suite task (shared.jobs.tasks.job_task), for the liveness, shutdown and
redelivery tests:
`celery -A tests.deploy.worker_app worker -Q lifecycle`."""

from __future__ import annotations

import os
import time
from pathlib import Path

from shared.jobs.queue import get_app
from shared.jobs.tasks import JobContext, job_task

app = get_app()
if "TEST_VISIBILITY_TIMEOUT_S" in os.environ:
    # Below the settings' 60 s floor, so that a redelivery shows within seconds.
    seconds = float(os.environ["TEST_VISIBILITY_TIMEOUT_S"])
    app.conf.broker_transport_options = {**app.conf.broker_transport_options, "visibility_timeout": seconds}


@app.task(name="lifecycle.work")
def work(log: str, seconds: float) -> None:
    """Log its start and end; only the first delivery takes `seconds`."""
    path = Path(log)
    first = not path.exists()
    with path.open("a") as out:
        out.write(f"start {os.getpid()}\n")
    time.sleep(seconds if first else 0)
    with path.open("a") as out:
        out.write(f"done {os.getpid()}\n")


@job_task("lifecycle.job_work", stage="caption")
def job_work(job: JobContext, log: str, seconds: float) -> None:
    """A suite task (its lock, its heartbeat): logs its start and end around `seconds`."""
    with Path(log).open("a") as out:
        out.write(f"start {os.getpid()}\n")
    time.sleep(seconds)
    with Path(log).open("a") as out:
        out.write(f"done {os.getpid()}\n")
