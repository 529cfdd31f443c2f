"""The embedded run: every stage in this process, artifacts in a local folder (design §5).

Each step is a thin shell around the services' plain stage functions, the same ones the
service workers call.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from services.activation import activations as act
from services.activation.groups import LevelGroups, build_groups, difference_neurons
from services.activation.target_model import LoadedModel, load_target_model
from services.caption.captioning import Captioner
from services.embed_cluster.clustering import finch_partitions
from services.embed_cluster.embedding import Embedder
from services.labelling.offline import label_tree
from shared import artifacts
from shared.errors import InputError
from shared.hierarchy import (
    SCHEMA_VERSION,
    ClusterLabel,
    LevelNeurons,
    Neuron,
    cluster_documents,
    validate_hierarchy,
)
from shared.ingest import (
    ImageRecord,
    SkippedFile,
    decode_image,
    find_caption_file,
    read_captions,
    scan_image_folder,
)
from shared.options import PipelineOptions
from shared.progress import NoProgress, Progress
from shared.storage import LocalStore, Store, put_json, put_npy, put_npz
from shared.tree import ClusterNode, build_tree

log = logging.getLogger(__name__)

STAGES = ("decode", "caption", "activations", "embed", "cluster", "groups", "labels")


@dataclass
class Ingested:
    records: list[ImageRecord]
    skipped: list[SkippedFile]
    provided: dict[str, str]  # file name -> caption the submission brought


@dataclass
class ImageStageOutput:
    """What the per-image stages leave: captions and pooled activations, in image order."""

    records: list[ImageRecord] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    caption_sources: list[str] = field(default_factory=list)
    pooled: list[np.ndarray] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)


@dataclass
class Result:
    hierarchy: dict[str, Any]
    tree: list[list[ClusterNode]]
    levels: list[LevelGroups]
    out_dir: Path


def ingest(image_dir: Path, options: PipelineOptions, captions_file: Path | None) -> Ingested:
    records, skipped = scan_image_folder(image_dir, options.max_image_pixels)
    source = captions_file or find_caption_file(image_dir)
    provided = read_captions(source) if source else {}
    if source:
        known = {r.file_name for r in records} | {s.file_name for s in skipped}
        unmatched = sorted(set(provided) - known)
        if unmatched:
            log.warning(
                "%d captions in %s name no file in %s (first: %s)",
                len(unmatched), source, image_dir, ", ".join(unmatched[:3]),
            )
    return Ingested(records, skipped, provided)


def _decode_shard(
    records: Sequence[ImageRecord], out: ImageStageOutput
) -> tuple[list[ImageRecord], list[Any]]:
    kept, images = [], []
    for record in records:
        try:
            images.append(decode_image(record.path.read_bytes()))
            kept.append(record)
        except (ValueError, OSError) as exc:
            out.skipped.append(SkippedFile(record.file_name, str(exc)))
    return kept, images


def run_image_stages(
    ingested: Ingested,
    options: PipelineOptions,
    target: LoadedModel,
    layer_names: Sequence[str],
    captioner: Captioner | None,
    device: torch.device,
    store: Store,
    progress: Progress,
) -> ImageStageOutput:
    """Decode each image once, then caption (where needed) and read activations, shard by shard."""
    out = ImageStageOutput()
    reader = act.ActivationReader(target.module, layer_names)
    records = ingested.records
    n_to_caption = sum(1 for r in records if r.file_name not in ingested.provided)
    progress.start("decode", len(records))
    progress.start("caption", n_to_caption)
    progress.start("activations", len(records))
    try:
        for shard, start in enumerate(range(0, len(records), options.shard_size)):
            kept, images = _decode_shard(records[start : start + options.shard_size], out)
            progress.advance("decode", len(records[start : start + options.shard_size]))
            if not kept:
                continue
            captions = _captions_for(kept, images, ingested.provided, captioner, options, progress)
            pooled = _pooled_for(images, reader, options.batch_size, device, progress)
            put_json(store, artifacts.captions_key(shard), [
                {"image_id": r.id, "caption": c, "source": s}
                for r, (c, s) in zip(kept, captions, strict=True)
            ])
            put_npz(store, artifacts.activations_key(shard), image_ids=np.array([r.id for r in kept]),
                    pooled=pooled.astype(np.float16))
            out.records.extend(kept)
            out.captions.extend(c for c, _ in captions)
            out.caption_sources.extend(s for _, s in captions)
            out.pooled.append(pooled)
    finally:
        reader.close()
    for stage in ("decode", "caption", "activations"):
        progress.finish(stage)
    return out


def _captions_for(
    records: Sequence[ImageRecord],
    images: Sequence[Any],
    provided: dict[str, str],
    captioner: Captioner | None,
    options: PipelineOptions,
    progress: Progress,
) -> list[tuple[str, str]]:
    missing = [i for i, r in enumerate(records) if r.file_name not in provided]
    generated: dict[int, str] = {}
    if missing:
        assert captioner is not None  # created whenever any image lacks a caption
        texts = captioner.caption([images[i] for i in missing], options.caption_batch_size, options.max_new_tokens)
        generated = dict(zip(missing, texts, strict=True))
        progress.advance("caption", len(missing))
    return [
        (provided[r.file_name], "provided") if i not in generated else (generated[i], "model")
        for i, r in enumerate(records)
    ]


def _pooled_for(
    images: Sequence[Any], reader: act.ActivationReader, batch_size: int, device: torch.device, progress: Progress
) -> np.ndarray:
    parts = []
    for start in range(0, len(images), batch_size):
        batch = act.preprocess(images[start : start + batch_size]).to(device)
        parts.append(reader.read(batch).cpu().numpy())
        progress.advance("activations", batch.shape[0])
    return np.concatenate(parts, axis=0)


def _level_neurons(levels: Sequence[LevelGroups]) -> list[LevelNeurons]:
    return [
        LevelNeurons(g.sizes, g.counts, g.members, difference_neurons(list(levels), i))
        for i, g in enumerate(levels)
    ]


def _groups_artifact(tree: Sequence[Sequence[ClusterNode]], levels: Sequence[LevelGroups],
                     neurons: Sequence[Neuron]) -> dict[str, Any]:
    """groups.json: per cluster the global neuron indices of its group and difference."""
    diff = _level_neurons(levels)
    return {
        "neurons": [[n.layer, n.channel] for n in neurons],
        "clusters": {
            node.id: {
                "size": int(levels[lv].sizes[node.index]),
                "group": np.flatnonzero(levels[lv].members[node.index]).tolist(),
                "counts": levels[lv].counts[node.index][levels[lv].members[node.index]].tolist(),
                "difference": np.flatnonzero(diff[lv].difference[node.index]).tolist(),
            }
            for lv, nodes in enumerate(tree)
            for node in nodes
        },
    }


def run(
    image_dir: Path,
    out_dir: Path,
    options: PipelineOptions,
    captions_file: Path | None = None,
    progress: Progress | None = None,
    version: str = "0",
) -> Result:
    """The whole method on one folder of images; returns (and writes) `hierarchy.json`."""
    progress = progress or NoProgress()
    store = LocalStore(out_dir)
    ingested = ingest(image_dir, options, captions_file)
    device = act.pick_device(options.device)

    # Load and check every model before the long work, so a typo fails in seconds.
    target = load_target_model(options.model, options.weights, options.allow_random_weights, seed=options.seed)
    target.module.to(device)
    layer_names = act.resolve_layers(target.module, options.layers)
    probe = act.ActivationReader(target.module, layer_names)
    try:
        layer_infos = probe.layer_infos(device)
    finally:
        probe.close()
    needs_captions = any(r.file_name not in ingested.provided for r in ingested.records)
    captioner = Captioner(options.caption_model, device) if needs_captions else None
    if captioner:
        captioner.load()
    embedder = Embedder(options.embed_model, options.device)
    embedder.load()

    put_json(store, artifacts.SPEC, {"options": options.model_dump(mode="json")})
    stage_out = run_image_stages(ingested, options, target, layer_names, captioner, device, store, progress)
    skipped = ingested.skipped + stage_out.skipped
    if not stage_out.records:
        raise InputError(
            "None of the images could be decoded: " + "; ".join(f"{s.file_name}: {s.reason}" for s in skipped[:5]),
            "Check that the files are intact images.",
        )
    records = stage_out.records
    put_json(store, artifacts.MANIFEST, {
        "images": [{"id": r.id, "file_name": r.file_name, "format": r.format,
                    "width": r.width, "height": r.height} for r in records],
        "skipped": [{"file_name": s.file_name, "reason": s.reason} for s in skipped],
    })

    progress.start("embed", len(records))
    embeddings = embedder.embed(stage_out.captions, options.embed_batch_size)
    put_npy(store, artifacts.EMBEDDINGS, embeddings)
    progress.finish("embed")

    progress.start("cluster", 1)
    partitions = finch_partitions(embeddings, options.ann_threshold, options.seed)
    put_npy(store, artifacts.PARTITIONS, partitions)
    progress.finish("cluster")

    progress.start("groups", 1)
    pooled = np.concatenate(stage_out.pooled, axis=0)
    mask = act.active_mask(pooled, layer_infos, options.top_fraction, options.ranking)
    levels = build_groups(partitions, mask, options.min_support, options.group_rule)
    tree = build_tree(partitions)
    neurons = [Neuron(info.name, c) for info in layer_infos for c in range(info.channels)]
    put_json(store, artifacts.GROUPS, _groups_artifact(tree, levels, neurons))
    progress.finish("groups")

    progress.start("labels", 1)
    labels = label_tree(tree, stage_out.captions, embeddings)
    put_json(store, artifacts.LABELS, {cid: vars(lab) for cid, lab in labels.items()})
    progress.finish("labels")

    hierarchy = assemble(
        options, version, records, stage_out, skipped, layer_infos, tree, levels, neurons, labels,
        target, captioner, embedder,
    )
    validate_hierarchy(hierarchy)
    put_json(store, artifacts.HIERARCHY, hierarchy)
    return Result(hierarchy, tree, levels, out_dir)


def assemble(
    options: PipelineOptions,
    version: str,
    records: Sequence[ImageRecord],
    stage_out: ImageStageOutput,
    skipped: Sequence[SkippedFile],
    layer_infos: Sequence[act.LayerInfo],
    tree: list[list[ClusterNode]],
    levels: Sequence[LevelGroups],
    neurons: Sequence[Neuron],
    labels: dict[str, ClusterLabel],
    target: LoadedModel,
    captioner: Captioner | None,
    embedder: Embedder,
) -> dict[str, Any]:
    image_ids = [r.id for r in records]
    return {
        "schema_version": SCHEMA_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "generator": {"name": "neuron-atlas", "version": version},
        "options": options.model_dump(mode="json"),
        "models": {
            "captioner": {
                "id": options.caption_model,
                "images_captioned": stage_out.caption_sources.count("model"),
            },
            "embedder": {"id": options.embed_model, "source": embedder.source, "dimension": embedder.dimension},
            "target": {"architecture": target.architecture, "weights": target.weights},
        },
        "layers": [{"name": info.name, "channels": info.channels} for info in layer_infos],
        "images": [
            {"id": r.id, "file_name": r.file_name, "caption": c, "caption_source": s}
            for r, c, s in zip(records, stage_out.captions, stage_out.caption_sources, strict=True)
        ],
        "skipped": [{"file_name": s.file_name, "reason": s.reason} for s in skipped],
        "levels": [{"level": i + 1, "clusters": len(nodes)} for i, nodes in enumerate(tree)],
        "clusters": cluster_documents(tree, _level_neurons(levels), neurons, labels, image_ids),
    }
