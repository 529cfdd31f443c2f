"""Activation worker: `celery -A services.activation.worker worker -Q activation`."""

from services.activation import model_tasks as model_tasks
from services.activation import tasks as tasks
from shared.jobs.queue import get_app

app = get_app()
