"""Artifacts written through their contracts read back as written."""

import json
import math
from pathlib import Path

from neuron_atlas_client.contracts.base import Contract
from shared.storage.artifacts import read_model, write_model
from shared.storage.stores import LocalStore


class Document(Contract):
    value: float
    nested: dict[str, list[float]]


def test_an_artifact_is_the_document_json_dumps_wrote_nan_and_infinity_included(tmp_path: Path) -> None:
    """Artifacts are serialised by pydantic (8x faster than model_dump + json.dumps); a NaN
    stays NaN, as json.dumps wrote it, where pydantic's default null would not read back."""
    store = LocalStore(tmp_path)
    document = Document(value=float("nan"), nested={"a": [1.5, float("inf")], "é": []})
    write_model(store, "doc.json", document)
    text = (tmp_path / "doc.json").read_text()
    assert json.loads(text).keys() == {"value", "nested"} and "NaN" in text and "é" in text
    again = read_model(store, "doc.json", Document)
    assert math.isnan(again.value) and again.nested == {"a": [1.5, float("inf")], "é": []}
