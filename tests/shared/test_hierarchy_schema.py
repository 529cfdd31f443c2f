import jsonschema
import pytest

from shared.hierarchy import SCHEMA_VERSION, hierarchy_schema, validate_hierarchy


def test_published_schema_is_a_valid_json_schema_for_this_version():
    schema = hierarchy_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION


def test_documents_that_break_the_schema_are_refused():
    with pytest.raises(jsonschema.ValidationError):
        validate_hierarchy({"schema_version": SCHEMA_VERSION, "clusters": []})
