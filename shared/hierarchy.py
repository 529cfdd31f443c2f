"""`hierarchy.json`: the result of a job, assembled from stage outputs and checked against its
published JSON Schema (`shared/schemas/hierarchy.schema.json`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources
from typing import Any

from shared import artifacts
from shared.storage import Store, get_json, get_npy, put_json
from shared.tree import ClusterNode, build_tree

SCHEMA_VERSION = "1.2"


@dataclass(frozen=True)
class ClusterLabel:
    label: str
    source: str  # "offline", "offline-fallback" or "llm:<model>@<prompt version>"
    difference_description: str | None
    model: str | None = None  # the language model that wrote the label, if one did
    prompt_version: str | None = None
    warning: str | None = None  # why an offline label stands in for the model's
    difference_source: str | None = None  # who wrote difference_description
    quality: float | None = None  # labelling.quality's METRIC; None without siblings

    def __post_init__(self) -> None:
        # A description without its author would be a claim nobody can weigh (schema rule too).
        if (self.difference_description is None) != (self.difference_source is None):
            raise ValueError(
                f"difference_source must be set exactly when difference_description is: "
                f"{self.difference_description!r} from {self.difference_source!r}"
            )


def offline_labelling_summary() -> dict[str, Any]:
    """`labelling` of a job whose labels.json predates labelling.json: offline, nothing spent."""
    return {
        "source": "offline",
        "endpoint": None,
        "model": None,
        "prompt_version": None,
        "strict": False,
        "labels": {},
        "accounting": {
            "requests": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "total_tokens": 0,
            "cache_hits": 0,
            "retries": 0,
            "malformed_answers": 0,
            "fallbacks": 0,
            "cost_usd": None,
        },
        "quality": None,
        "warnings": [],
    }


def difference_source(label: Mapping[str, Any]) -> str | None:
    """Who wrote a stored label's difference description; labels.json written before the source
    was recorded for offline descriptions (before schema 1.2) gets the label's own source."""
    if label["difference_description"] is None:
        return None
    return label.get("difference_source") or label["source"]


def neuron_names(layers: Sequence[Mapping[str, Any]]) -> list[tuple[str, int]]:
    """(layer, channel) of every neuron, in global index order."""
    return [(layer["name"], c) for layer in layers for c in range(layer["channels"])]


def neuron_list(
    indices: Sequence[int],
    counts: Mapping[int, int],
    size: int,
    names: Sequence[tuple[str, int]],
    evidence: Mapping[int, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Neuron objects, strongest support first (ties in neuron order), each with the evidence
    for its membership when the uncertainty stage ran."""
    ordered = sorted(indices, key=lambda i: (-counts[i], i))
    neurons = []
    for i in ordered:
        neuron: dict[str, Any] = {
            "layer": names[i][0],
            "channel": names[i][1],
            "support": round(counts[i] / size, 6),
        }
        if evidence is not None:
            neuron["evidence"] = evidence[i]
        neurons.append(neuron)
    return neurons


def membership_evidence(members: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    """Per neuron index, its membership's evidence from a cluster of uncertainty.json."""
    evidence = {}
    for j, neuron in enumerate(members["neuron"]):
        evidence[int(neuron)] = {
            "count": members["count"][j],
            "interval": [members["lower"][j], members["upper"][j]],
            "p_value": members["p_value"][j],
            "q_value": members["q_value"][j],
            "significant": members["significant"][j],
            "reliable": members["reliable"][j],
            "inclusion_probability": _at(members["inclusion_probability"], j),
            "expected_support": _at(members["expected_support"], j),
            "expected_support_sd": _at(members["expected_support_sd"], j),
        }
    return evidence


def _at(values: Sequence[Any] | None, j: int) -> Any:
    return None if values is None else values[j]


def cluster_documents(
    tree: Sequence[Sequence[ClusterNode]],
    groups: Mapping[str, Any],
    labels: Mapping[str, Mapping[str, Any]],
    image_ids: Sequence[str],
    uncertainty: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The `clusters` of hierarchy.json from the tree, groups.json, labels.json and, when the
    uncertainty stage ran, uncertainty.json."""
    names = neuron_names(groups["layers"])
    clusters = []
    for level_nodes, level in zip(tree, groups["levels"], strict=True):
        for node in level_nodes:
            size = int(level["sizes"][node.index])
            group = level["clusters"][node.index]
            counts = dict(zip(group["group"], group["counts"], strict=True))
            label = labels[node.id]
            stats = uncertainty["clusters"][node.id] if uncertainty else None
            evidence = membership_evidence(stats["members"]) if stats else None
            document = {
                "id": node.id,
                "level": node.level,
                "parent": node.parent,
                "children": list(node.children),
                "size": size,
                "images": [image_ids[i] for i in node.images],
                "label": label["label"],
                "label_source": label["source"],
                "label_model": label.get("model"),
                "label_prompt_version": label.get("prompt_version"),
                "label_warning": label.get("warning"),
                "label_quality": label.get("quality"),
                "neurons": neuron_list(group["group"], counts, size, names, evidence),
                "difference_neurons": neuron_list(group["difference"], counts, size, names, evidence),
                "difference_description": label["difference_description"],
                "difference_source": difference_source(label),
            }
            if stats:
                document["uncertainty"] = {
                    "stability": stats["stability"],
                    "causal": stats["causal"],
                    "difference_test": stats["difference_test"],
                }
            clusters.append(document)
    return clusters


def assemble_hierarchy(store: Store, version: str) -> dict[str, Any]:
    """hierarchy.json from the job's artifacts, validated, written, and returned."""
    spec = get_json(store, artifacts.SPEC)
    manifest = get_json(store, artifacts.MANIFEST)
    rows, shard_skipped = artifacts.read_caption_shards(store)
    groups = get_json(store, artifacts.GROUPS)
    labels = get_json(store, artifacts.LABELS)
    labelling = (
        get_json(store, artifacts.LABELLING)
        if store.exists(artifacts.LABELLING)
        else offline_labelling_summary()
    )
    embedder = get_json(store, artifacts.EMBEDDER)
    tree = build_tree(get_npy(store, artifacts.PARTITIONS))
    uncertainty = get_json(store, artifacts.UNCERTAINTY) if store.exists(artifacts.UNCERTAINTY) else None
    file_names = {image["id"]: image["file_name"] for image in manifest["images"]}
    options = spec["options"]
    document = {
        "schema_version": SCHEMA_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "generator": {"name": "neuron-atlas", "version": version},
        "options": options,
        "models": {
            "captioner": {
                "id": options["caption_model"],
                "images_captioned": sum(1 for row in rows if row["source"] == "model"),
            },
            "embedder": embedder,
            "target": {"architecture": options["model"], "weights": groups["weights"]},
        },
        "layers": groups["layers"],
        "images": [
            {
                "id": row["image_id"],
                "file_name": file_names[row["image_id"]],
                "caption": row["caption"],
                "caption_source": row["source"],
            }
            for row in rows
        ],
        "skipped": [*manifest["skipped"], *shard_skipped],
        "labelling": labelling,
        "levels": [{"level": i + 1, "clusters": len(nodes)} for i, nodes in enumerate(tree)],
        "clusters": cluster_documents(tree, groups, labels, [row["image_id"] for row in rows], uncertainty),
    }
    if uncertainty:
        document["uncertainty"] = {key: uncertainty[key] for key in ("method", "summary", "pruning")}
    validate_hierarchy(document)
    put_json(store, artifacts.HIERARCHY, document)
    return document


@lru_cache(maxsize=1)
def hierarchy_schema() -> dict[str, Any]:
    text = resources.files("shared").joinpath("schemas/hierarchy.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate_hierarchy(document: Mapping[str, Any]) -> None:
    """Raise `jsonschema.ValidationError` when `document` breaks the published schema."""
    import jsonschema

    jsonschema.validate(document, hierarchy_schema())
