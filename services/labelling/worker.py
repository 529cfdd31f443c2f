"""Labelling worker: `celery -A services.labelling.worker worker -Q labelling` (also runs the
final `pipeline.assemble` step and the webhook deliveries, `webhooks.deliver`)."""

from services.labelling import tasks as tasks
from shared.jobs.queue import get_app
from shared.webhooks import tasks as webhook_tasks  # noqa: F401

app = get_app()
