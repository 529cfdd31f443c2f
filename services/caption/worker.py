"""Caption worker: `celery -A services.caption.worker worker -Q caption`."""

from services.caption import tasks as tasks
from shared.jobs.queue import get_app

app = get_app()
