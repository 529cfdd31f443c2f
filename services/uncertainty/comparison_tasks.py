"""The comparison of two finished suite jobs (`POST /v1/comparisons`), on the uncertainty
queue. The gateway waits for the answer: `{"ok": {...}}` with the comparison's mode and summary
(comparison.json itself is stored under `shared.jobs.comparisons.comparison_key`), or
`{"problem": {...}}` with what was wrong; every outcome is an answer, never an exception, so the
gateway can tell results that cannot be compared (422) from storage that is down (503)."""

from __future__ import annotations

import logging
from typing import Any

from neuron_atlas_client.errors import NeuronAtlasError
from services.uncertainty.comparison import compare_results
from shared.jobs.comparisons import COMPARE, comparison_key
from shared.jobs.dependencies import unavailable_dependency
from shared.jobs.queue import get_app
from shared.jobs.tasks import object_store
from shared.storage import artifacts
from shared.storage.artifacts import write_model
from shared.storage.stores import PrefixedStore

log = logging.getLogger(__name__)


@get_app().task(name=COMPARE)
def compare_jobs(
    tenant: str, comparison_id: str, job_a: str, job_b: str, alpha: float | None
) -> dict[str, Any]:
    """Compare job A (the reference) with job B over the same images; store comparison.json."""
    try:
        store = object_store()
        comparison = compare_results(
            PrefixedStore(store, artifacts.job_prefix(job_a)),
            PrefixedStore(store, artifacts.job_prefix(job_b)),
            (job_a, job_b),
            alpha=alpha,
            generator="neuron-atlas suite",
        )
        write_model(store, comparison_key(tenant, comparison_id), comparison)
        return {"ok": {"mode": comparison.method.mode, "summary": comparison.summary.document()}}
    except NeuronAtlasError as exc:
        return {"problem": {"kind": exc.kind, "problem": exc.problem, "fix": exc.fix}}
    except Exception as exc:
        if (dependency := unavailable_dependency(exc)) is not None:
            log.warning("comparison: %s unavailable (%s)", dependency.name, type(exc).__name__)
            return {
                "problem": {
                    "kind": f"{dependency.kind}-unavailable",
                    "problem": f"The comparison could not reach {dependency.name}.",
                    "fix": "Try again shortly; if it persists, tell the operator.",
                }
            }
        log.exception("comparison %s failed", comparison_id)
        return {
            "problem": {
                "kind": "comparison-failed",
                "problem": f"The comparison failed in the worker ({type(exc).__name__}).",
                "fix": "Try again; if it fails again, ask the operator to look at the uncertainty "
                "workers' logs.",
            }
        }
