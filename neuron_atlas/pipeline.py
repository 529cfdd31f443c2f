"""The embedded run: every stage in this process, artifacts in a local folder
(docs/architecture.md, 'Two ways to run, one code path').

It calls each stage's one entry (`run_<stage>`), the same ones the suite's Celery tasks call,
over a `LocalStore`, so the two cannot drift. One difference, on purpose: each shard is decoded
once and given to both per-shard entries, where the suite's parallel branches decode it each.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neuron_atlas_client.contracts.hierarchy import Hierarchy
from neuron_atlas_client.errors import InputError, ModelLoadError
from neuron_atlas_client.options import PipelineOptions
from neuron_core.target_model import LoadedModel, TargetSpec, target_model
from services.activation.input_check import enforce, run_input_check
from services.activation.stage import hook_layers, run_activation_shard, run_groups
from services.caption.captioning import Captioner
from services.caption.stage import run_caption_shard
from services.embed_cluster.stage import run_embed_cluster
from services.labelling.settings import LabelSettings, get_settings
from services.labelling.stage import check_label_settings, run_labelling
from services.uncertainty.stage import run_uncertainty
from shared import artifacts
from shared.hierarchy import assemble_hierarchy
from shared.ingest import (
    decode_shard,
    find_caption_file,
    manifest_document,
    read_captions,
    read_label_file,
    read_labels,
    scan_image_folder,
)
from shared.progress import NoProgress, Progress
from shared.sentence_embedder import Embedder
from shared.storage import LocalStore, Store, put_json

log = logging.getLogger(__name__)


@dataclass
class Models:
    """Everything loaded and checked before the long work starts, so a typo fails in seconds."""

    target: LoadedModel
    captioner: Captioner | None
    embedder: Embedder


def ingest(
    store: Store,
    image_dir: Path,
    options: PipelineOptions,
    captions_file: Path | None,
    labels_file: Path | None = None,
) -> dict[str, Any]:
    """Find the images, their captions and class labels; write spec.json and manifest.json.
    Labels come from the metadata file's `label` column, and from `labels_file` (`--labels`),
    which wins."""
    given_labels = read_label_file(labels_file) if labels_file else {}  # a bad file fails first
    records, skipped = scan_image_folder(image_dir, options.max_image_pixels)
    known = {r.file_name for r in records} | {s.file_name for s in skipped}
    source = captions_file or find_caption_file(image_dir)
    provided = read_captions(source) if source else {}
    if source:
        _warn_unmatched("captions", provided, source, image_dir, known)
    labels = read_labels(source) if source else {}
    if labels_file:
        if not set(given_labels) & known:
            raise InputError(
                f"None of the {len(given_labels)} labels in {labels_file} names a file in {image_dir} "
                f"(first: {', '.join(sorted(given_labels)[:3])}).",
                "Use the images' paths relative to IMAGE_DIR as file names (e.g. cats/001.jpg).",
            )
        _warn_unmatched("labels", given_labels, labels_file, image_dir, known)
        labels |= given_labels
    manifest = manifest_document(records, skipped, provided, labels or None)
    put_json(store, artifacts.SPEC, {"options": options.model_dump(mode="json")})
    put_json(store, artifacts.MANIFEST, manifest)
    return manifest


def _warn_unmatched(what: str, given: dict[str, str], source: Path, image_dir: Path, known: set[str]) -> None:
    unmatched = sorted(set(given) - known)
    if unmatched:
        log.warning(
            "%d %s in %s name no file in %s (first: %s)",
            len(unmatched),
            what,
            source,
            image_dir,
            ", ".join(unmatched[:3]),
        )


def load_models(options: PipelineOptions, uncaptioned: list[str]) -> Models:
    """Load every model the job needs; `uncaptioned` names the images that need the captioner."""
    target = target_model(TargetSpec.of(options))
    with hook_layers(target, options) as reader:
        reader.layer_infos(
            target.device, target.preprocessing.input_size
        )  # a layer that does not run fails now, not after captioning
    captioner = Captioner(options.caption_model, target.device) if uncaptioned else None
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
    return Models(target, captioner, embedder)


def image_stages(
    store: Store,
    image_dir: Path,
    manifest: dict[str, Any],
    options: PipelineOptions,
    models: Models,
    progress: Progress,
) -> None:
    """Per shard: decode once, then the caption and activation entries on it."""
    entries = manifest["images"]
    progress.start("caption", sum(1 for e in entries if e["caption"] is None))
    progress.start("activations", len(entries))
    for index in range(artifacts.shard_count(len(entries), options.shard_size)):
        shard = decode_shard(manifest, index, options.shard_size, folder_image_reader(image_dir))
        run_caption_shard(store, manifest, shard, options, lambda: _loaded(models.captioner))
        progress.advance("caption", sum(1 for e in shard.kept if e["caption"] is None))
        done = run_activation_shard(store, shard, options, models.target)
        progress.advance("activations", done)
    progress.finish("caption")
    progress.finish("activations")


def check_inputs(
    store: Store, options: PipelineOptions, target: LoadedModel, image_dir: Path, progress: Progress
) -> None:
    """Where images carry class labels: does the model recognise them as given? A warning is
    logged at once (and kept for hierarchy.json), before the long stages; under `strict` the
    run fails with it instead."""
    check = run_input_check(store, options, lambda: target, folder_image_reader(image_dir), progress)
    enforce(check, options)
    for warning in check.warnings if check else []:
        log.warning(
            "%s\n  what to do: %s",
            warning.message,
            warning.fix,
            extra={"kind": warning.kind, "fix": warning.fix},
        )


def folder_image_reader(image_dir: Path) -> Callable[[dict[str, Any]], bytes]:
    """Bytes of a manifest entry's image in the user's folder (the suite reads the bucket)."""
    return lambda entry: (image_dir / entry["file_name"]).read_bytes()


def _loaded(captioner: Captioner | None) -> Captioner:
    if captioner is None:  # load_models loads one whenever an image has no caption
        raise ValueError("images without captions need a captioner")
    return captioner


def run(
    image_dir: Path,
    out_dir: Path,
    options: PipelineOptions,
    captions_file: Path | None = None,
    progress: Progress | None = None,
    version: str = "0",
    label_settings: LabelSettings | None = None,
    labels_file: Path | None = None,
) -> Hierarchy:
    """The whole method on one folder of images; writes the artifacts and returns hierarchy.json.

    `label_settings` default to the environment's (`NEURON_ATLAS_LLM__*`): no endpoint there
    means offline labels. `labels_file`: class labels (`--labels`)."""
    progress = progress or NoProgress()
    label_settings = label_settings or get_settings()
    check_label_settings(label_settings)
    store = LocalStore(out_dir)
    manifest = ingest(store, image_dir, options, captions_file, labels_file)
    models = load_models(options, [e["file_name"] for e in manifest["images"] if e["caption"] is None])
    image_stages(store, image_dir, manifest, options, models, progress)
    check_inputs(store, options, models.target, image_dir, progress)
    progress.start("embed+cluster", 1)
    run_embed_cluster(store, options, models.embedder)
    progress.finish("embed+cluster")
    progress.start("groups", 1)
    run_groups(store, options)
    progress.finish("groups")
    run_labelling(store, models.embedder, label_settings, progress=progress)
    progress.start("uncertainty", 1)
    run_uncertainty(
        store,
        options,
        models.target,
        lambda entry: (image_dir / entry["file_name"]).read_bytes(),
        progress,
    )
    progress.finish("uncertainty")
    return assemble_hierarchy(store, version)
