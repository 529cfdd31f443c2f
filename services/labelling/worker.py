"""Labelling worker: `celery -A services.labelling.worker worker -Q labelling` (also runs the
final `pipeline.assemble` step)."""

from services.labelling import tasks as tasks
from shared.queue import get_app

app = get_app()
