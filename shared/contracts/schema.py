"""The published JSON Schemas, generated from the contracts: hierarchy.json's from `Hierarchy`,
comparison.json's from `Comparison`, a multi-model job's models.json's from `MultiModelResult`.

    python -m shared.contracts.schema     # rewrites shared/schemas/*.schema.json

A test checks that the published files are what this generates, so they cannot drift.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from neuron_atlas_client.contracts.comparison import Comparison
from neuron_atlas_client.contracts.hierarchy import Hierarchy
from neuron_atlas_client.contracts.multi_model import MultiModelResult

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
PUBLISHED = SCHEMAS / "hierarchy.schema.json"
COMPARISON_PUBLISHED = SCHEMAS / "comparison.schema.json"
MULTI_MODEL_PUBLISHED = SCHEMAS / "models.schema.json"


def _json_schema(contract: type[BaseModel]) -> dict[str, Any]:
    schema = contract.model_json_schema()
    # `$schema` and `$id` first, as readers expect them.
    head = {key: schema.pop(key) for key in ("$schema", "$id")}
    return head | schema


def hierarchy_json_schema() -> dict[str, Any]:
    return _json_schema(Hierarchy)


def comparison_json_schema() -> dict[str, Any]:
    return _json_schema(Comparison)


def _text(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def schema_text() -> str:
    return _text(hierarchy_json_schema())


def comparison_schema_text() -> str:
    return _text(comparison_json_schema())


def multi_model_json_schema() -> dict[str, Any]:
    return _json_schema(MultiModelResult)


def multi_model_schema_text() -> str:
    return _text(multi_model_json_schema())


def main() -> None:
    PUBLISHED.write_text(schema_text())
    COMPARISON_PUBLISHED.write_text(comparison_schema_text())
    MULTI_MODEL_PUBLISHED.write_text(multi_model_schema_text())
    print(f"wrote {PUBLISHED}, {COMPARISON_PUBLISHED} and {MULTI_MODEL_PUBLISHED}")


if __name__ == "__main__":
    main()
