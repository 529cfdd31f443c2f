"""comparison.json's published JSON Schema is the one generated from the contract."""

from __future__ import annotations

import json

import jsonschema
import pytest

from neuron_atlas_client.contracts.comparison import COMPARISON_SCHEMA_VERSION
from shared.contracts.schema import COMPARISON_PUBLISHED, comparison_json_schema, comparison_schema_text


def test_published_comparison_schema_is_the_one_generated_from_the_contract() -> None:
    assert COMPARISON_PUBLISHED.read_text() == comparison_schema_text(), (
        "run: python -m shared.contracts.schema"
    )
    schema = json.loads(COMPARISON_PUBLISHED.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema_version"]["const"] == COMPARISON_SCHEMA_VERSION
    assert schema == comparison_json_schema()


def test_a_comparison_without_its_concepts_is_refused() -> None:
    schema = json.loads(COMPARISON_PUBLISHED.read_text())
    with pytest.raises(jsonschema.ValidationError, match="concepts"):
        jsonschema.validate({"schema_version": COMPARISON_SCHEMA_VERSION}, schema)
