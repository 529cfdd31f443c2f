"""Schemathesis hooks for test_schemathesis.py (loaded through SCHEMATHESIS_HOOKS): one check of
our own, beside schemathesis' `all`, that no answer names where the suite's parts run.

Problem documents are built from what went wrong, and an exception's text names hosts, ports,
endpoints and worker paths (issue 26: `HTTPConnectionPool(host=..., port=...)`, temp folders).
The suite's own addresses and folders, passed in NEURON_ATLAS_INTERNALS (JSON), must never
appear in a body or a header.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import schemathesis

INTERNALS: list[str] = json.loads(os.environ.get("NEURON_ATLAS_INTERNALS", "[]"))
RAN = os.environ.get("NEURON_ATLAS_INTERNALS_CHECKED")  # a file: the check says it ran


@schemathesis.check
def names_no_internal_address_or_path(ctx: Any, response: Any, case: Any) -> None:
    """No answer names the suite's Redis, a connection pool, or a folder of the servers."""
    if RAN and not Path(RAN).exists():
        Path(RAN).write_text("ran\n")
    shown = response.text + " " + " ".join(f"{k}: {v}" for k, v in response.headers.items())
    for internal in INTERNALS:
        if internal in shown:
            raise AssertionError(f"the answer names {internal!r}, an address or path inside the suite")
