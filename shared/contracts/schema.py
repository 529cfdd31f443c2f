"""The published JSON Schema of hierarchy.json, generated from `Hierarchy`.

    python -m shared.contracts.schema     # rewrites shared/schemas/hierarchy.schema.json

A test checks that the published file is what this generates, so the two cannot drift.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from neuron_atlas_client.contracts.hierarchy import Hierarchy

PUBLISHED = Path(__file__).resolve().parents[1] / "schemas" / "hierarchy.schema.json"


def hierarchy_json_schema() -> dict[str, Any]:
    schema = Hierarchy.model_json_schema()
    # `$schema` and `$id` first, as readers expect them.
    head = {key: schema.pop(key) for key in ("$schema", "$id")}
    return head | schema


def schema_text() -> str:
    return json.dumps(hierarchy_json_schema(), indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    PUBLISHED.write_text(schema_text())
    print(f"wrote {PUBLISHED}")


if __name__ == "__main__":
    main()
