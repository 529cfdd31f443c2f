"""A suite job's life: the Redis job store, the Celery queue and task shell, heartbeats."""
