"""Comparisons on the suite (`POST /v1/comparisons`; docs/comparison.md): the worker task's name,
its queue (`shared.jobs.queue.ROUTES` routes it there too), and where a tenant's comparisons are kept.
The gateway names the task by string; the uncertainty workers run it
(`services/uncertainty/comparison_tasks.py`)."""

from __future__ import annotations

import re

COMPARE = "uncertainty.compare"
COMPARE_QUEUE = "uncertainty"
COMPARISON_ID = re.compile(r"^[0-9a-f]{32}$")


def comparison_key(tenant: str, comparison_id: str) -> str:
    """Where a tenant's comparison.json is kept; tenants never share a prefix."""
    return f"comparisons/{tenant}/{comparison_id}/comparison.json"
