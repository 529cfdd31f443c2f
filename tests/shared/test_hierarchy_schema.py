import json

import jsonschema
import pytest
from pydantic import ValidationError

from neuron_atlas_client.contracts.hierarchy import Cluster
from neuron_atlas_client.contracts.labels import ClusterLabel
from shared.contracts.schema import PUBLISHED, hierarchy_json_schema, schema_text
from shared.pipeline.hierarchy import SCHEMA_VERSION, hierarchy_schema, validate_hierarchy


def test_published_schema_is_a_valid_json_schema_for_this_version():
    schema = hierarchy_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION


def test_published_schema_is_the_one_generated_from_the_models():
    assert PUBLISHED.read_text() == schema_text(), "run: python -m shared.contracts.schema"
    assert hierarchy_schema() == json.loads(schema_text())


def test_documents_that_break_the_schema_are_refused():
    with pytest.raises(jsonschema.ValidationError):
        validate_hierarchy({"schema_version": SCHEMA_VERSION, "clusters": []})


CLUSTER = {
    "id": "L1-0",
    "level": 1,
    "parent": "L2-0",
    "children": [],
    "size": 1,
    "images": ["a"],
    "label": "snow",
    "label_source": "offline",
    "label_model": None,
    "label_prompt_version": None,
    "label_warning": None,
    "label_quality": None,
    "neurons": [],
    "difference_neurons": [],
    "difference_description": "snowy forest",
    "difference_source": None,
}


def test_a_difference_description_needs_its_source_in_schema_and_models():
    schema = hierarchy_json_schema()
    cluster_schema = {**schema["$defs"]["Cluster"], "$defs": schema["$defs"]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(CLUSTER, cluster_schema)
    jsonschema.validate({**CLUSTER, "difference_source": "offline"}, cluster_schema)
    jsonschema.validate({**CLUSTER, "difference_description": None}, cluster_schema)
    with pytest.raises(ValidationError):
        ClusterLabel(label="snow", source="offline", difference_description="snowy forest")
    assert Cluster.model_validate({**CLUSTER, "difference_source": "offline"}).difference_source == "offline"
    with pytest.raises(ValidationError):
        Cluster.model_validate(CLUSTER)


def test_a_difference_description_without_its_source_is_refused(demo_like_hierarchy):
    child = next(c for c in demo_like_hierarchy["clusters"] if c["difference_description"])
    assert child["difference_source"] == "offline"
    validate_hierarchy(demo_like_hierarchy)
    child["difference_source"] = None
    with pytest.raises(jsonschema.ValidationError, match="is not of type 'string'"):
        validate_hierarchy(demo_like_hierarchy)


def test_a_source_without_a_description_is_refused(demo_like_hierarchy):
    top = next(c for c in demo_like_hierarchy["clusters"] if c["parent"] is None)
    top["difference_source"] = "offline"
    with pytest.raises(jsonschema.ValidationError, match="is not of type 'null'"):
        validate_hierarchy(demo_like_hierarchy)


def test_offline_labels_name_the_source_of_every_difference_description():
    import numpy as np

    from services.labelling.offline import label_tree
    from shared.pipeline.tree import build_tree

    partitions = np.array([[0, 0], [0, 0], [1, 0], [1, 0]], dtype=np.int32)
    captions = ["a red circle", "a red circle on sand", "a blue circle", "a blue circle on sand"]
    labels = label_tree(build_tree(partitions), captions, np.eye(4, dtype=np.float32))
    described = [label for label in labels.values() if label.difference_description]
    assert described and all(label.difference_source == "offline" for label in described)
    with pytest.raises(ValueError, match="difference_source must be set"):
        ClusterLabel(
            label="red circle", source="offline", difference_description="red", difference_source=None
        )
