"""The gateway: the FastAPI app that takes jobs, serves results and queues tasks by name (no torch)."""
