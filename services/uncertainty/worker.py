"""Uncertainty worker: `celery -A services.uncertainty.worker worker -Q uncertainty`."""

from services.uncertainty import comparison_tasks as comparison_tasks
from services.uncertainty import tasks as tasks
from shared.jobs.queue import get_app

app = get_app()
