"""docs/reference/api.md is the gateway's OpenAPI document, written out: current, and complete."""

from __future__ import annotations

import re

from services.gateway.main import create_app
from services.gateway.openapi_docs import PAGE, api_page, current_page, operation_anchor, schema_anchor


def test_the_api_reference_page_is_current() -> None:
    assert PAGE.read_text() == current_page(), (
        "docs/reference/api.md is out of date: run `python -m services.gateway.openapi_docs`"
    )


def test_every_operation_and_schema_has_a_section_and_every_link_lands() -> None:
    document = create_app().openapi()
    page = api_page(document)
    anchors = set(re.findall(r"\{ #([\w-]+) \}", page))
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            assert operation_anchor(method, path) in anchors, (method, path)
            for status in operation["responses"]:
                assert f"| {status} |" in page
    assert {schema_anchor(name) for name in document["components"]["schemas"]} <= anchors
    links = set(re.findall(r"\]\(#([\w-]+)\)", page))
    assert links and links <= anchors, links - anchors


def test_a_field_reads_as_its_type_its_bounds_and_its_default() -> None:
    document = {
        "paths": {
            "/v1/things/{id}": {
                "get": {
                    "tags": ["things"],
                    "summary": "Get Thing",
                    "description": "One thing.",
                    "parameters": [
                        {
                            "name": "page_size",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
                        }
                    ],
                    "responses": {
                        "200": {
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}
                            }
                        }
                    },
                }
            }
        },
        "components": {
            "schemas": {
                "Thing": {
                    "description": "A thing.",
                    "required": ["kind"],
                    "properties": {
                        "kind": {"enum": ["a", "b"], "description": "Which | kind <of> it is."},
                        "interval": {
                            "type": "array",
                            "prefixItems": [{"type": "number"}, {"type": "number"}],
                        },
                        "owner": {"anyOf": [{"$ref": "#/components/schemas/Thing"}, {"type": "null"}]},
                    },
                }
            }
        },
    }
    page = api_page(document)
    assert "| `page_size` | query | integer (≥ 1, ≤ 100) |  | Default: `20`. |" in page
    assert '| `kind` | one of `"a"`, `"b"` | yes | Which \\| kind &lt;of> it is. |' in page
    assert "| `interval` | [number, number] |" in page
    assert "| `owner` | [Thing](#thing) or null |" in page
    assert "| 200 |  | `application/json` [Thing](#thing) |" in page
