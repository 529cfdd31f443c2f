"""The comparison view as a static folder, `DIR/explorer/`, which `neuron-atlas compare A_OUT B_OUT
--out DIR` writes beside `DIR/comparison.json`: the same page and assets as a result's report
(`report.py`), opening on the comparison, with each answer the gateway's
`/ui/api/comparisons/{id}/...` gives written as a `data/*.js` script (one per concept and per
concept's children), so it opens from disk with no server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from services.gateway.explorer.atlas import safe_name
from services.gateway.explorer.comparison_view import ComparisonView, comparison_view
from services.gateway.explorer.page import index_html
from services.gateway.explorer.report import FOLDER, fresh_staging, swap_in, write_data


def load_comparison_view(
    comparison: dict[str, Any], a_out: Path, b_out: Path, title: str = ""
) -> ComparisonView:
    """The view of a comparison of two result folders (their `hierarchy.json`)."""
    hierarchies = [json.loads((out / "hierarchy.json").read_text(encoding="utf-8")) for out in (a_out, b_out)]
    return comparison_view(comparison, hierarchies[0], hierarchies[1], title=title)


def write_job_comparison_reports(out_dir: Path) -> dict[str, Path]:
    """A multi-model result folder's comparison views, `OUT/comparisons/<key>/explorer/`, one per
    model compared with the baseline (`OUT/comparisons/<key>.json`, both models' hierarchy.json
    under `OUT/models/`); each one's index.html by key (none for a single-model result)."""
    models_path = out_dir / "models.json"
    if not models_path.is_file():
        return {}
    document = json.loads(models_path.read_text(encoding="utf-8"))
    sections = {model["key"]: model for model in document["models"]}
    base = document["baseline"]
    written: dict[str, Path] = {}
    for key, model in sections.items():
        if model["comparison"] is None:  # the baseline
            continue
        comparison = json.loads((out_dir / model["comparison"]).read_text(encoding="utf-8"))
        a_folder, b_folder = ((out_dir / sections[k]["hierarchy"]).parent for k in (base, key))
        view = load_comparison_view(comparison, a_folder, b_folder, title=f"{base} against {key}")
        written[key] = write_comparison_report(out_dir / "comparisons" / key, view)
    return written


def write_comparison_report(out_dir: Path, view: ComparisonView, folder_name: str = FOLDER) -> Path:
    """Write `out_dir/<folder_name>/` (default `explorer/`) afresh for `view`; returns its
    index.html. A multi-model run writes each comparison's under `OUT/comparisons/<key>/`, apart
    from the baseline's own `OUT/explorer/` that `neuron-atlas report OUT` rewrites."""
    folder = out_dir / folder_name
    staging = fresh_staging(out_dir, folder_name)
    (staging / "index.html").write_text(index_html("static", view="comparison"), encoding="utf-8")
    write_data(staging, "comparison/summary.js", "comparison/summary", view.summary())
    write_data(staging, "comparison/changed.js", "comparison/changed", view.changed())
    write_data(staging, "comparison/children/_top.js", "comparison/children/_top", view.children(None))
    for cluster_id, cluster in view.clusters.items():
        if cluster_id not in view.concepts:
            continue
        name = safe_name(cluster_id)
        write_data(
            staging,
            f"comparison/concept/{name}.js",
            f"comparison/concept/{cluster_id}",
            view.concept(cluster_id),
        )
        if cluster["children"]:
            write_data(
                staging,
                f"comparison/children/{name}.js",
                f"comparison/children/{cluster_id}",
                view.children(cluster_id),
            )
    return swap_in(staging, folder)
