"""The activation service's stages over a job's store, one entry each, called by the Celery tasks
and the embedded runner alike:

- `run_activation_shard`: one decoded shard of images into `activations/{shard}.npz`;
- `run_groups`: the active sets and `partitions.npy` into `groups.json`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from neuron_atlas_client.contracts.models import IMAGENET_EVAL, Preprocessing
from neuron_atlas_client.options import PipelineOptions
from neuron_core.active_sets import active_mask, read_active_sets, write_activation_shard
from neuron_core.groups import LevelGroups, build_groups, groups_document
from neuron_core.hooks import ActivationReader, preprocess
from neuron_core.layers import resolve_layers
from neuron_core.neuron_axis import LayerInfo
from neuron_core.target_model import LoadedModel
from services.activation.input_check import enforce, run_input_check
from shared.pipeline.ingest import DecodedShard, decode_shard
from shared.pipeline.stage_job import StageJob
from shared.storage import artifacts
from shared.storage.stores import Store, get_npy
from shared.storage.thumbnails import write_thumbnails


def hook_layers(target: LoadedModel, options: PipelineOptions) -> ActivationReader:
    """Hooks on the job's layers; an unknown layer name fails here, before any image is read."""
    return ActivationReader(target.module, resolve_layers(target.module, options.layers))


def run_activation_shard(
    store: Store, shard: DecodedShard, options: PipelineOptions, target: LoadedModel
) -> int:
    """Write `activations/{shard}.npz` for the shard's decodable images, and the ones that did
    not decode (`artifacts.write_undecodable`); returns how many images the shard held
    (decodable or not), for progress."""
    artifacts.write_undecodable(store, shard.index, shard.skipped)
    if shard.kept:
        with hook_layers(target, options) as reader:
            layers = reader.layer_infos(target.device, target.preprocessing.input_size)
            pooled, mask, predicted = shard_activations(
                shard.images, reader, layers, options, target.device, target.preprocessing
            )
        ids = [entry["id"] for entry in shard.kept]
        # Every shard writes the same record (which shard runs first is not known); it is small.
        artifacts.write_model(store, artifacts.TARGET, target.record())
        write_activation_shard(store, shard.index, ids, pooled, mask, layers, target.weights, predicted)
        # for the explorer, from the images decoded here: one pack per shard
        write_thumbnails(store, shard.index, ids, shard.images)
    return len(shard.entries)


def shard_activations(
    images: Sequence[Image.Image],
    reader: ActivationReader,
    layers: Sequence[LayerInfo],
    options: PipelineOptions,
    device: torch.device,
    prep: Preprocessing = IMAGENET_EVAL,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Pooled activations (float32), active sets and the model's top-1 classes (None where its
    output is no classifier's) of one shard's decoded images."""
    parts, classes = [], []
    for start in range(0, len(images), options.batch_size):
        batch = preprocess(images[start : start + options.batch_size], prep).to(device)
        parts.append(reader.read(batch).cpu().numpy())
        classes.append(reader.predicted())
    pooled = np.concatenate(parts, axis=0)
    predicted = (
        np.concatenate([c.cpu().numpy() for c in classes if c is not None])
        if all(c is not None for c in classes)
        else None
    )
    return pooled, active_mask(pooled, layers, options.top_fraction, options.ranking), predicted


def run_groups(store: Store, options: PipelineOptions) -> list[LevelGroups]:
    """Neuron groups of every cluster (partitions.npy x active sets) into `groups.json`; rows in
    the order of the usable caption rows, as in partitions.npy."""
    image_ids = [row["image_id"] for row in artifacts.read_usable_captions(store)]
    active = read_active_sets(store, image_ids)
    partitions = get_npy(store, artifacts.PARTITIONS)
    levels = build_groups(
        partitions, active.mask, options.min_support, options.group_rule, options.exclude_generic
    )
    artifacts.write_model(store, artifacts.GROUPS, groups_document(levels, active))
    return levels


def activation_stage(job: StageJob, shard: int | None) -> int:
    """The stage table's entry (shared/pipeline/stages.py): one shard's activations; images written."""
    assert shard is not None, "the activation stage runs per shard"
    images = job.shard(shard, decode_shard)
    done = run_activation_shard(job.store, images, job.options, job.resource("target"))
    # This branch decodes every image, so it is the one that counts the undecodable ones.
    job.count_undecodable(shard, len(images.skipped))
    return done


def groups_stage(job: StageJob, shard: int | None = None) -> None:
    """The stage table's entry (shared/pipeline/stages.py): the input check where images carry class
    labels (its warnings shown at once, or the run failed under `strict`), then the groups."""
    check = run_input_check(
        job.store, job.options, lambda: job.resource("target"), job.read_image, job.progress
    )
    if check is not None and check.warnings:
        job.warn(check.warnings)
    enforce(check, job.options)
    run_groups(job.store, job.options)
