"""Worker metrics (Prometheus), JSON logs, and the Celery signal hooks that wire them."""
