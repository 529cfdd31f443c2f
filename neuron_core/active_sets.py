"""Per-image active sets: each image's top `top_fraction` neurons, and the stored activation
shards (`activations/{shard}.npz`) that the groups and uncertainty stages read back."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from neuron_atlas_client.errors import InputError
from neuron_core.neuron_axis import LayerInfo, stack_layers
from shared.storage import artifacts
from shared.storage.stores import Store, get_npz, put_npz


def active_count(channels: int, top_fraction: float) -> int:
    """How many of `channels` neurons are active: round(fraction * channels), at least 1."""
    return max(1, min(channels, math.floor(top_fraction * channels + 0.5)))


def _top_k_mask(values: np.ndarray, k: int) -> np.ndarray:
    """Row-wise top-k as a mask; ties at the threshold go to the lowest channel index."""
    n, width = values.shape
    if k >= width:
        return np.ones((n, width), dtype=bool)
    kth = np.partition(values, width - k, axis=1)[:, width - k][:, None]
    above = values > kth
    needed = k - above.sum(axis=1, keepdims=True)
    tied = values == kth
    return above | (tied & (np.cumsum(tied, axis=1) <= needed))


def active_mask(
    pooled: np.ndarray, layers: Sequence[LayerInfo], top_fraction: float, ranking: str
) -> np.ndarray:
    """Bool (images, neurons): each image's top `top_fraction` per layer, or over all layers."""
    values = np.asarray(pooled, dtype=np.float32)
    if ranking == "global":
        return _top_k_mask(values, active_count(values.shape[1], top_fraction))
    if ranking != "per_layer":
        raise InputError(f"Unknown ranking {ranking!r}.", "Use per_layer or global.")
    mask = np.empty(values.shape, dtype=bool)
    for layer in layers:
        cols = slice(layer.offset, layer.offset + layer.channels)
        mask[:, cols] = _top_k_mask(values[:, cols], active_count(layer.channels, top_fraction))
    return mask


def pack_mask(mask: np.ndarray) -> np.ndarray:
    """Active sets as bitsets, 8 neurons a byte (docs/architecture.md, 'Object storage layout')."""
    return np.packbits(mask, axis=1)


def unpack_mask(bits: np.ndarray, n_neurons: int) -> np.ndarray:
    """Bitsets back to a bool (images, neurons) mask."""
    return np.unpackbits(bits, axis=1, count=n_neurons).astype(bool)


@dataclass(frozen=True)
class ActiveSets:
    """The job's active sets, rows in the order of `image_ids`."""

    image_ids: list[str]
    mask: np.ndarray  # bool (images, neurons)
    layers: list[LayerInfo]
    weights: str
    pooled: np.ndarray | None = None  # float16 (images, neurons) mean activations, when read


def write_activation_shard(
    store: Store,
    shard: int,
    image_ids: Sequence[str],
    pooled: np.ndarray,
    mask: np.ndarray,
    layers: Sequence[LayerInfo],
    weights: str,
    predicted: np.ndarray | None = None,
) -> None:
    """`predicted`: the model's top-1 class of each image in the same pass (kept where the
    model's output is a classifier's)."""
    extra = {} if predicted is None else {"predicted": np.asarray(predicted, dtype=np.int64)}
    put_npz(
        store,
        artifacts.activations_key(shard),
        image_ids=np.array(image_ids, dtype="U64"),
        pooled=pooled.astype(np.float16),
        active_bits=pack_mask(mask),
        layer_names=np.array([layer.name for layer in layers]),
        layer_channels=np.array([layer.channels for layer in layers], dtype=np.int64),
        weights=np.array(weights),
        **extra,
    )


def read_predictions(store: Store) -> dict[str, int]:
    """Every decoded image's top-1 class from the activation pass; -1 where its shard has none."""
    predictions: dict[str, int] = {}
    for key in sorted(store.list("activations/")):
        arrays = get_npz(store, key)
        ids = [str(i) for i in arrays["image_ids"]]
        classes = arrays["predicted"].tolist() if "predicted" in arrays else [-1] * len(ids)
        predictions.update(zip(ids, (int(c) for c in classes), strict=True))
    return predictions


def read_active_sets(store: Store, order: Sequence[str] | None = None, pooled: bool = False) -> ActiveSets:
    """All shards' active sets; with `order`, rows follow those image ids; with `pooled`, the
    pooled activations too."""
    ids: list[str] = []
    masks: list[np.ndarray] = []
    values: list[np.ndarray] = []
    shards = [get_npz(store, key) for key in sorted(store.list("activations/"))]
    if not shards:
        raise FileNotFoundError("no activation shards in the job's store")
    layers = stack_layers(shards[0]["layer_names"].tolist(), shards[0]["layer_channels"].tolist())
    n_neurons = sum(layer.channels for layer in layers)
    for arrays in shards:
        ids.extend(str(i) for i in arrays["image_ids"])
        masks.append(unpack_mask(arrays["active_bits"], n_neurons))
        if pooled:
            values.append(arrays["pooled"])
    mask = np.concatenate(masks, axis=0)
    activations = np.concatenate(values, axis=0) if pooled else None
    if order is not None:
        row = {image_id: i for i, image_id in enumerate(ids)}
        rows = [row[i] for i in order]
        mask, ids = mask[rows], list(order)
        activations = activations[rows] if activations is not None else None
    return ActiveSets(ids, mask, layers, str(shards[0]["weights"]), activations)
