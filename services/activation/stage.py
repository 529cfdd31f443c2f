"""Activation stage over a job's store: `activations/{shard}.npz` per shard, then `groups.json`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from services.activation import activations as act
from services.activation.groups import LevelGroups, build_groups, difference_neurons
from services.activation.target_model import LoadedModel, load_target_model
from shared import artifacts
from shared.ingest import decode_entries
from shared.options import PipelineOptions
from shared.storage import Store, get_npy, get_npz, put_json, put_npz
from shared.thumbnails import write_thumbnails


@dataclass(frozen=True)
class ActiveSets:
    """The job's active sets, rows in the order of `image_ids`."""

    image_ids: list[str]
    mask: np.ndarray  # bool (images, neurons)
    layers: list[act.LayerInfo]
    weights: str


@dataclass
class TargetReader:
    """A target model ready to read: hooks on the selected layers, on its device."""

    target: LoadedModel
    reader: act.ActivationReader
    layers: list[act.LayerInfo]
    device: torch.device


def load_target_reader(options: PipelineOptions, cache_dir: Path | None, device: str | None) -> TargetReader:
    """Load the job's target model and hook its layers (the same steps as the embedded run)."""
    torch_device = act.pick_device(options.device or device)
    target = load_target_model(
        options.model, options.weights, options.allow_random_weights, cache_dir=cache_dir, seed=options.seed
    )
    target.module.to(torch_device)
    reader = act.ActivationReader(target.module, act.resolve_layers(target.module, options.layers))
    return TargetReader(target, reader, reader.layer_infos(torch_device), torch_device)


def activation_shard_step(
    store: Store, manifest: dict[str, Any], shard: int, options: PipelineOptions, model: TargetReader
) -> int:
    """The suite's activation task: decode the shard's stored images, write
    `activations/{shard}.npz` and the thumbnails. Returns the number of images the shard held."""
    entries = artifacts.shard_entries(manifest, shard, options.shard_size)
    kept, images, _ = decode_entries(entries, lambda e: store.get_bytes(artifacts.manifest_image_key(e)))
    if kept:
        pooled, mask = shard_activations(images, model.reader, model.layers, options, model.device)
        ids = [e["id"] for e in kept]
        write_activation_shard(store, shard, ids, pooled, mask, model.layers, model.target.weights)
        write_thumbnails(store, ids, images)  # for the explorer, from the images decoded here
    return len(entries)


def shard_activations(
    images: Sequence[Image.Image],
    reader: act.ActivationReader,
    layers: Sequence[act.LayerInfo],
    options: PipelineOptions,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled activations (float32) and active sets of one shard's decoded images."""
    parts = []
    for start in range(0, len(images), options.batch_size):
        batch = act.preprocess(images[start : start + options.batch_size]).to(device)
        parts.append(reader.read(batch).cpu().numpy())
    pooled = np.concatenate(parts, axis=0)
    return pooled, act.active_mask(pooled, layers, options.top_fraction, options.ranking)


def write_activation_shard(
    store: Store,
    shard: int,
    image_ids: Sequence[str],
    pooled: np.ndarray,
    mask: np.ndarray,
    layers: Sequence[act.LayerInfo],
    weights: str,
) -> None:
    put_npz(
        store,
        artifacts.activations_key(shard),
        image_ids=np.array(image_ids, dtype="U64"),
        pooled=pooled.astype(np.float16),
        active_bits=act.pack_mask(mask),
        layer_names=np.array([layer.name for layer in layers]),
        layer_channels=np.array([layer.channels for layer in layers], dtype=np.int64),
        weights=np.array(weights),
    )


def _layers_from(arrays: dict[str, np.ndarray]) -> list[act.LayerInfo]:
    infos, offset = [], 0
    for name, channels in zip(arrays["layer_names"], arrays["layer_channels"], strict=True):
        infos.append(act.LayerInfo(str(name), int(channels), offset))
        offset += int(channels)
    return infos


def read_active_sets(store: Store, order: Sequence[str] | None = None) -> ActiveSets:
    """All shards' active sets; with `order`, rows follow those image ids."""
    ids: list[str] = []
    masks: list[np.ndarray] = []
    shards = [get_npz(store, key) for key in sorted(store.list("activations/"))]
    if not shards:
        raise FileNotFoundError("no activation shards in the job's store")
    layers = _layers_from(shards[0])
    n_neurons = sum(layer.channels for layer in layers)
    for arrays in shards:
        ids.extend(str(i) for i in arrays["image_ids"])
        masks.append(act.unpack_mask(arrays["active_bits"], n_neurons))
    mask = np.concatenate(masks, axis=0)
    if order is not None:
        row = {image_id: i for i, image_id in enumerate(ids)}
        mask, ids = mask[[row[i] for i in order]], list(order)
    return ActiveSets(ids, mask, layers, str(shards[0]["weights"]))


def groups_step(store: Store, options: PipelineOptions, image_ids: Sequence[str]) -> list[LevelGroups]:
    """Neuron groups of every cluster (partitions.npy x active sets) into `groups.json`."""
    active = read_active_sets(store, image_ids)
    partitions = get_npy(store, artifacts.PARTITIONS)
    levels = build_groups(partitions, active.mask, options.min_support, options.group_rule)
    put_json(store, artifacts.GROUPS, groups_document(levels, active))
    return levels


def groups_document(levels: Sequence[LevelGroups], active: ActiveSets) -> dict[str, Any]:
    """groups.json: layers, then per level and cluster: group and difference (global neuron
    indices) and the group neurons' active counts, in the order of `group`."""
    return {
        "weights": active.weights,
        "layers": [{"name": layer.name, "channels": layer.channels} for layer in active.layers],
        "levels": [
            {
                "sizes": level.sizes.tolist(),
                "clusters": [
                    {
                        "group": np.flatnonzero(level.members[k]).tolist(),
                        "difference": np.flatnonzero(diff[k]).tolist(),
                        "counts": level.counts[k][level.members[k]].tolist(),
                    }
                    for k in range(len(level.sizes))
                ],
            }
            for lv, level in enumerate(levels)
            for diff in [difference_neurons(list(levels), lv)]
        ],
    }
