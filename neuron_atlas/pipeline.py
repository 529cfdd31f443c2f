"""The embedded run: every stage in this process, artifacts in a local folder (design §5).

It sequences the services' store steps, the same ones the suite's workers run, over a
`LocalStore`. One difference, on purpose: each shard is decoded once and fed to both the
captioner and the target model, where the suite's parallel branches decode it each.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from services.activation import activations as act
from services.activation.stage import groups_step, shard_activations, write_activation_shard
from services.activation.target_model import LoadedModel, load_target_model
from services.caption.captioning import Captioner
from services.caption.stage import caption_rows, write_caption_shard
from services.embed_cluster.embedding import Embedder
from services.embed_cluster.stage import embed_cluster_step
from services.labelling.settings import LabelSettings, get_settings
from services.labelling.stage import check_label_settings, label_step
from services.uncertainty.stage import manifest_image_reader, uncertainty_step
from shared import artifacts
from shared.errors import ModelLoadError
from shared.hierarchy import assemble_hierarchy
from shared.ingest import (
    decode_entries,
    find_caption_file,
    manifest_document,
    read_captions,
    scan_image_folder,
)
from shared.options import PipelineOptions
from shared.progress import NoProgress, Progress
from shared.storage import LocalStore, Store, put_json
from shared.thumbnails import write_thumbnails

log = logging.getLogger(__name__)


@dataclass
class Models:
    """Everything loaded and checked before the long work starts, so a typo fails in seconds."""

    target: LoadedModel
    layers: list[act.LayerInfo]
    reader: act.ActivationReader
    captioner: Captioner | None
    embedder: Embedder
    device: torch.device


def ingest(
    store: Store, image_dir: Path, options: PipelineOptions, captions_file: Path | None
) -> dict[str, Any]:
    """Find the images and their captions; write spec.json and manifest.json."""
    records, skipped = scan_image_folder(image_dir, options.max_image_pixels)
    source = captions_file or find_caption_file(image_dir)
    provided = read_captions(source) if source else {}
    if source:
        known = {r.file_name for r in records} | {s.file_name for s in skipped}
        unmatched = sorted(set(provided) - known)
        if unmatched:
            log.warning(
                "%d captions in %s name no file in %s (first: %s)",
                len(unmatched),
                source,
                image_dir,
                ", ".join(unmatched[:3]),
            )
    manifest = manifest_document(records, skipped, provided)
    put_json(store, artifacts.SPEC, {"options": options.model_dump(mode="json")})
    put_json(store, artifacts.MANIFEST, manifest)
    return manifest


def load_models(options: PipelineOptions, uncaptioned: list[str]) -> Models:
    """Load every model the job needs; `uncaptioned` names the images that need the captioner."""
    device = act.pick_device(options.device)
    target = load_target_model(
        options.model, options.weights, options.allow_random_weights, seed=options.seed
    )
    target.module.to(device)
    reader = act.ActivationReader(target.module, act.resolve_layers(target.module, options.layers))
    layers = reader.layer_infos(device)
    captioner = Captioner(options.caption_model, device) if uncaptioned else None
    if captioner:
        try:
            captioner.load()
        except ModelLoadError as exc:
            shown = ", ".join(uncaptioned[:3]) + (", …" if len(uncaptioned) > 3 else "")
            raise ModelLoadError(
                f"{len(uncaptioned)} images have no caption ({shown}). {exc.problem}", exc.fix
            ) from None
    embedder = Embedder(options.embed_model, options.device)
    embedder.load()
    return Models(target, layers, reader, captioner, embedder, device)


def image_stages(
    store: Store,
    image_dir: Path,
    manifest: dict[str, Any],
    options: PipelineOptions,
    models: Models,
    progress: Progress,
) -> None:
    """Per shard: decode once, caption what has no caption, read activations; write both."""
    entries = manifest["images"]
    provided = {e["file_name"]: e["caption"] for e in entries if e["caption"] is not None}
    progress.start("caption", sum(1 for e in entries if e["caption"] is None))
    progress.start("activations", len(entries))
    for shard, start in enumerate(range(0, len(entries), options.shard_size)):
        kept, images, skipped = decode_entries(
            entries[start : start + options.shard_size],
            lambda entry: (image_dir / entry["file_name"]).read_bytes(),
        )
        ids = [e["id"] for e in kept]
        rows = caption_rows(
            ids,
            [e["file_name"] for e in kept],
            images,
            provided,
            models.captioner,
            options.caption_batch_size,
            options.max_new_tokens,
        )
        write_caption_shard(store, shard, options.caption_model if models.captioner else None, rows, skipped)
        progress.advance("caption", sum(1 for r in rows if r["source"] == "model"))
        if kept:
            pooled, mask = shard_activations(images, models.reader, models.layers, options, models.device)
            write_activation_shard(store, shard, ids, pooled, mask, models.layers, models.target.weights)
            write_thumbnails(store, ids, images)  # for the explorer, from the images decoded here
        progress.advance("activations", len(entries[start : start + options.shard_size]))
    progress.finish("caption")
    progress.finish("activations")


def run(
    image_dir: Path,
    out_dir: Path,
    options: PipelineOptions,
    captions_file: Path | None = None,
    progress: Progress | None = None,
    version: str = "0",
    label_settings: LabelSettings | None = None,
) -> dict[str, Any]:
    """The whole method on one folder of images; writes the artifacts and returns hierarchy.json.

    `label_settings` default to the environment's (`NEURON_ATLAS_LLM__*`): no endpoint there
    means offline labels."""
    progress = progress or NoProgress()
    label_settings = label_settings or get_settings()
    check_label_settings(label_settings)
    store = LocalStore(out_dir)
    manifest = ingest(store, image_dir, options, captions_file)
    models = load_models(options, [e["file_name"] for e in manifest["images"] if e["caption"] is None])
    try:
        image_stages(store, image_dir, manifest, options, models, progress)
    finally:
        models.reader.close()
    rows = artifacts.read_usable_captions(store)
    captions = [row["caption"] for row in rows]
    image_ids = [row["image_id"] for row in rows]

    progress.start("embed+cluster", 1)
    embed_cluster_step(store, options, models.embedder, captions)
    progress.finish("embed+cluster")
    progress.start("groups", 1)
    groups_step(store, options, image_ids)
    progress.finish("groups")
    label_step(store, captions, models.embedder, label_settings, progress=progress)
    progress.start("uncertainty", 1)
    uncertainty_step(
        store,
        options,
        image_ids,
        models.target.module,
        manifest_image_reader(
            manifest, image_ids, lambda entry: (image_dir / entry["file_name"]).read_bytes()
        ),
        models.device,
    )
    progress.finish("uncertainty")
    return assemble_hierarchy(store, version)
