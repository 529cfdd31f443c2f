"""shared/schemas/models.schema.json is what `MultiModelResult` generates (python -m
shared.contracts.schema), and a job's one model keeps the single-model options."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from neuron_atlas_client.options import PipelineOptions
from shared.contracts.schema import MULTI_MODEL_PUBLISHED, multi_model_schema_text


def test_the_published_schema_is_current() -> None:
    assert MULTI_MODEL_PUBLISHED.read_text() == multi_model_schema_text(), (
        "run `python -m shared.contracts.schema`"
    )


def test_models_are_named_one_way_with_distinct_keys() -> None:
    two = PipelineOptions(model_ids=["a" * 32, "b" * 32], layers=["layer4"])
    assert two.multi_model and [m.layers for m in two.target_models()] == [("layer4",), ("layer4",)]
    assert two.for_model(two.target_models()[1]).model_id == "b" * 32
    assert not PipelineOptions(model="resnet50").multi_model
    for bad, message in (
        ({"model_ids": ["a" * 32] * 2}, "two models have the key"),
        ({"model_ids": ["a" * 32, "b" * 32], "model": "resnet50"}, "model given beside models"),
        ({"models": [{"model": "resnet18"}] * 5}, "at most 4"),
        ({"models": [{"model": "resnet18"}]}, "at least 2"),
        ({"models": [{"model": "a", "key": "Bad Key"}, {"model": "b"}]}, "String should match pattern"),
    ):
        with pytest.raises(ValidationError, match=message):
            PipelineOptions.model_validate(bad)
