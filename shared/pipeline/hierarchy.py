"""`hierarchy.json`: the result of a job, assembled from the stage artifacts through their
typed contracts (`shared.contracts`) and checked against its published JSON Schema
(`shared/schemas/hierarchy.schema.json`, generated from `Hierarchy`)."""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO

import jsonschema

from neuron_atlas_client.contracts.base import Contract
from neuron_atlas_client.contracts.groups import Groups
from neuron_atlas_client.contracts.hierarchy import (
    SCHEMA_VERSION,
    CaptionerRecord,
    Cluster,
    ClusterUncertainty,
    EmbedderRecord,
    Generator,
    Hierarchy,
    ImageModelUncertaintyRecord,
    ImageRecord,
    LevelSize,
    ModelsUsed,
    Neuron,
    SkippedFile,
    TargetRecord,
)
from neuron_atlas_client.contracts.input_check import InputCheck
from neuron_atlas_client.contracts.labels import ClusterLabel, Labelling, Labels
from neuron_atlas_client.contracts.uncertainty import (
    EVIDENCE_COLUMNS,
    Evidence,
    ImageModelUncertainty,
    Uncertainty,
    member_column,
)
from neuron_atlas_client.options import PipelineOptions
from shared.pipeline.stage_job import StageJob
from shared.pipeline.tree import ClusterNode, build_tree
from shared.storage import artifacts
from shared.storage.stores import Store, get_json, get_npy

__all__ = [
    "SCHEMA_VERSION",
    "ClusterLabel",
    "assemble_hierarchy",
    "read_hierarchy",
    "validate_hierarchy",
    "write_hierarchy",
]


def neuron_list(
    indices: Sequence[int],
    counts: Mapping[int, int],
    size: int,
    names: Sequence[tuple[str, int]],
    evidence: Mapping[int, Evidence] | None = None,
) -> list[Neuron]:
    """Neurons, strongest support first (ties in neuron order), each with the evidence for its
    membership when the uncertainty stage ran."""
    ordered = sorted(indices, key=lambda i: (-counts[i], i))
    return [
        Neuron(
            layer=names[i][0],
            channel=names[i][1],
            support=round(counts[i] / size, 6),
            evidence=evidence[i] if evidence is not None else None,
        )
        for i in ordered
    ]


def membership_evidence(members: Contract) -> dict[int, Evidence]:
    """Per neuron index, its membership's evidence from a cluster of uncertainty.json: the
    columns of MemberStats are Evidence's fields, so a row of them is one Evidence."""
    neurons = member_column(members, "neuron") or []
    columns = {name: member_column(members, name) for name in EVIDENCE_COLUMNS}
    return {
        int(neuron): Evidence.model_validate(
            {name: (values[j] if values is not None else None) for name, values in columns.items()}
        )
        for j, neuron in enumerate(neurons)
    }


def _image_uncertainty(rows: Mapping[int, int], table: ImageModelUncertainty | None, i: int) -> Any:
    """Image row `i`'s predictive entropy, where it was in the dropout passes' sample."""
    if table is None or i not in rows:
        return None
    j = rows[i]
    return ImageModelUncertaintyRecord(
        total=table.total[j],
        expected_entropy=table.expected_entropy[j],
        mutual_information=table.mutual_information[j],
    )


def cluster_documents(
    tree: Sequence[Sequence[ClusterNode]],
    groups: Groups,
    labels: Labels,
    image_ids: Sequence[str],
    uncertainty: Uncertainty | None = None,
) -> Iterator[Cluster]:
    """The `clusters` of hierarchy.json from the tree, groups.json, labels.json and, when the
    uncertainty stage ran, uncertainty.json; one at a time, so a caller can write each and let
    it go (`write_hierarchy`)."""
    names = groups.neuron_names()
    for level_nodes, level in zip(tree, groups.levels, strict=True):
        for node in level_nodes:
            size = int(level.sizes[node.index])
            group = level.clusters[node.index]
            counts = dict(zip(group.group, group.counts, strict=True))
            label = labels.root[node.id]
            stats = uncertainty.clusters[node.id] if uncertainty else None
            evidence = membership_evidence(stats.members) if stats else None
            yield Cluster(
                id=node.id,
                level=node.level,
                parent=node.parent,
                children=list(node.children),
                size=size,
                images=[image_ids[i] for i in node.images],
                label=label.label,
                label_source=label.source,
                label_model=label.model,
                label_prompt_version=label.prompt_version,
                label_warning=label.warning,
                label_quality=label.quality,
                neurons=neuron_list(group.group, counts, size, names, evidence),
                difference_neurons=neuron_list(group.difference, counts, size, names, evidence),
                difference_description=label.difference_description,
                difference_source=label.difference_source,
                uncertainty=(
                    ClusterUncertainty(
                        group_stability=stats.group_stability,
                        clustering_stability=stats.clustering_stability,
                        specificity=stats.specificity,
                        importance=stats.importance,
                        difference_test=stats.difference_test,
                        model_uncertainty=stats.model_uncertainty,
                    )
                    if stats
                    else None
                ),
            )


# Where the clusters go in the head's JSON (`model_dump_json(indent=1)`): a top-level key, so
# one space deep. Inside a JSON string every quote is escaped, so no value can hold this text.
CLUSTERS_SLOT = '\n "clusters": []'


def write_document(stream: BinaryIO, head: Hierarchy, clusters: Iterable[Cluster]) -> None:
    """hierarchy.json for `head` (a `Hierarchy` with no clusters) and `clusters` into `stream`,
    byte for byte what `Hierarchy(..., clusters=list(clusters)).model_dump_json(indent=1)`
    writes, one cluster at a time: the whole document as pydantic objects and then as one string
    took 3.5 GB at 16,384 images (a 540 MB document; benchmarks/pipeline.py), past the labelling
    worker's memory limit."""
    text = head.model_dump_json(indent=1)
    at = text.index(CLUSTERS_SLOT)
    if head.clusters or text.count(CLUSTERS_SLOT) != 1:
        raise ValueError("the head of hierarchy.json must hold one empty top-level clusters list")
    stream.write(text[: at + len(CLUSTERS_SLOT) - 1].encode())
    separator = b""
    for cluster in clusters:
        # each cluster two spaces deeper than on its own: inside the top-level list
        stream.write(separator + b"\n  " + cluster.model_dump_json(indent=1).replace("\n", "\n  ").encode())
        separator = b","
        del cluster  # gone before the next one is built
    stream.write((b"\n ]" if separator else b"]") + text[at + len(CLUSTERS_SLOT) :].encode())


def hierarchy_bytes(head: Hierarchy, clusters: Iterable[Cluster]) -> bytes:
    buffer = io.BytesIO()
    write_document(buffer, head, clusters)
    return buffer.getvalue()


def write_hierarchy(store: Store, version: str) -> None:
    """hierarchy.json from the job's artifacts, validated and written a cluster at a time (the
    suite's assemble step and relabel: nothing needs the document after)."""
    head, clusters = _hierarchy_parts(store, version)
    _store_document(store, head, clusters)


def assemble_hierarchy(store: Store, version: str) -> Hierarchy:
    """hierarchy.json from the job's artifacts, validated, written, and returned (the embedded
    run reports from it, so its clusters are kept)."""
    head, clusters = _hierarchy_parts(store, version)
    kept = list(clusters)
    _store_document(store, head, kept)
    return head.model_copy(update={"clusters": kept})


def _store_document(store: Store, head: Hierarchy, clusters: Iterable[Cluster]) -> None:
    """Through a temporary file: the document is never held whole as text."""
    with tempfile.TemporaryDirectory(prefix="neuron-atlas-hierarchy-") as folder:
        path = Path(folder) / "hierarchy.json"
        with path.open("wb") as stream:
            write_document(stream, head, clusters)
        store.put_file(artifacts.HIERARCHY, path)


def read_hierarchy(store: Store) -> Hierarchy:
    return artifacts.read_model(store, artifacts.HIERARCHY, Hierarchy)


def _hierarchy_parts(store: Store, version: str) -> tuple[Hierarchy, Iterator[Cluster]]:
    """The document without its clusters, and its clusters one at a time. Each is built through
    its contract, which validates it; the published JSON Schema is generated from the same
    contract (tests hold the two equal and validate assembled documents against the schema),
    so the document is not walked with jsonschema again: that took 17 s of a 22 s assembly at
    1,024 images, more than a third of the run's floor (benchmarks/pipeline.py)."""
    options = artifacts.read_options(store)
    manifest = get_json(store, artifacts.MANIFEST)
    rows, shard_skipped = artifacts.read_caption_shards(store)
    groups = artifacts.read_model(store, artifacts.GROUPS, Groups)
    labels = Labels.stored(get_json(store, artifacts.LABELS))
    labelling = (
        artifacts.read_model(store, artifacts.LABELLING, Labelling)
        if store.exists(artifacts.LABELLING)
        else Labelling.offline()  # a job from before labelling.json: offline, nothing spent
    )
    tree = build_tree(get_npy(store, artifacts.PARTITIONS))
    uncertainty = (
        artifacts.read_model(store, artifacts.UNCERTAINTY, Uncertainty)
        if store.exists(artifacts.UNCERTAINTY)
        else None
    )
    input_check = (
        artifacts.read_model(store, artifacts.INPUT_CHECK, InputCheck)
        if store.exists(artifacts.INPUT_CHECK)
        else None
    )
    file_names = {image["id"]: image["file_name"] for image in manifest["images"]}
    class_labels = {image["id"]: image.get("label") for image in manifest["images"]}
    entropy = uncertainty.image_model_uncertainty if uncertainty else None
    sampled = {row: j for j, row in enumerate(entropy.rows)} if entropy else {}
    head = Hierarchy(
        schema_version=SCHEMA_VERSION,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        generator=Generator(name="neuron-atlas", version=version),
        options=options,
        models=_models_used(store, options, rows, groups),
        layers=groups.layers,
        images=[
            ImageRecord(
                id=row["image_id"],
                file_name=file_names[row["image_id"]],
                caption=row["caption"],
                caption_source=row["source"],
                label=class_labels.get(row["image_id"]),
                model_uncertainty=_image_uncertainty(sampled, entropy, i),
            )
            for i, row in enumerate(rows)
        ],
        skipped=[SkippedFile.model_validate(s) for s in [*manifest["skipped"], *shard_skipped]],
        labelling=labelling,
        levels=[LevelSize(level=i + 1, clusters=len(nodes)) for i, nodes in enumerate(tree)],
        clusters=[],
        uncertainty=uncertainty.job() if uncertainty else None,
        warnings=input_check.warnings if input_check and input_check.warnings else None,
    )
    clusters = cluster_documents(tree, groups, labels, [row["image_id"] for row in rows], uncertainty)
    return head, clusters


def _models_used(
    store: Store, options: PipelineOptions, rows: Sequence[Mapping[str, Any]], groups: Groups
) -> ModelsUsed:
    return ModelsUsed(
        captioner=CaptionerRecord(
            id=options.caption_model,
            images_captioned=sum(1 for row in rows if row["source"] == "model"),
        ),
        embedder=artifacts.read_model(store, artifacts.EMBEDDER, EmbedderRecord),
        target=(
            artifacts.read_model(store, artifacts.TARGET, TargetRecord)
            if store.exists(artifacts.TARGET)
            else TargetRecord(architecture=options.model, weights=groups.weights)  # no image was usable
        ),
    )


@lru_cache(maxsize=1)
def hierarchy_schema() -> dict[str, Any]:
    text = resources.files("shared").joinpath("schemas/hierarchy.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate_hierarchy(document: Mapping[str, Any]) -> None:
    """Raise `jsonschema.ValidationError` when `document` breaks the published schema."""
    jsonschema.validate(document, hierarchy_schema())


def assemble_stage(job: StageJob, shard: int | None = None) -> None:
    """The stage table's entry (shared/pipeline/stages.py): hierarchy.json, for the package `version`."""
    write_hierarchy(job.store, job.resource("version"))
