"""Embed-and-cluster worker: `celery -A services.embed_cluster.worker worker -Q embed_cluster`."""

from services.embed_cluster import tasks as tasks
from shared.jobs.queue import get_app

app = get_app()
