"""Labelling worker: `celery -A services.labelling.worker worker -Q labelling` (also runs the
final `pipeline.assemble` step and the webhook deliveries, `webhooks.deliver`)."""

from services.labelling import tasks as tasks
from shared import webhook_tasks as webhook_tasks
from shared.queue import get_app

app = get_app()
