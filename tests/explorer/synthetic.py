"""A synthetic finished job for the explorer: hierarchy.json with every field the explorer shows,
pooled activations (`activations/*.npz`) and WebP thumbnails, at any size (the benchmark uses
25,000 images and 5,000 concepts). Labels are built from a small vocabulary, so a search finds
a known word."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from shared.storage import LocalStore, put_npz
from shared.thumbnails import thumbnail_bytes, thumbnail_key

LAYERS = [("layer1", 64), ("layer2", 128), ("layer3", 256), ("layer4", 512)]
WORDS = ["dog", "cat", "forest", "snowy", "beach", "city", "street", "red", "boat", "mountain", "bird", "car"]
SHARD = 256


def level_sizes(concepts: int) -> list[int]:
    """Concepts per level, finest first, each level about a fifth of the one below."""
    sizes, left = [], concepts
    while left > 0:
        top = max(1, round(left * 0.8)) if left > 6 else left
        sizes.append(top)
        left -= top
    return sizes


def _evidence(rng: np.random.Generator, k: int, n: int) -> dict[str, Any]:
    support = k / n
    low, high = max(0.0, support - 0.15), min(1.0, support + 0.1)
    p = float(rng.uniform(1e-6, 0.05))
    return {
        "count": k,
        "interval": [round(low, 4), round(high, 4)],
        "p_value": p,
        "q_value": min(1.0, p * 3),
        "significant": p * 3 <= 0.05,
        "chance_p_value": p / 10,
        "chance_q_value": min(1.0, p / 3),
        "above_chance": True,
        "collection_rate": round(support / 3, 4),
        "generic": False,
        "reliable": low >= 0.5,
        "inclusion_probability": round(float(rng.uniform(0.5, 1.0)), 3),
        "expected_support": round(support, 3),
        "expected_support_sd": 0.05,
    }


def make_job(out: Path, images: int, concepts: int, seed: int = 0, thumbs: bool = True) -> dict[str, Any]:
    """Write the job into `out` (an embedded run's output folder layout); returns the hierarchy."""
    rng = np.random.default_rng(seed)
    store = LocalStore(out)
    ids = [hashlib.sha256(f"image-{i}".encode()).hexdigest() for i in range(images)]
    sizes = level_sizes(concepts)
    # level 1: every image in one cluster; level n+1: each cluster of level n under one parent
    assign = [rng.integers(0, sizes[0], images)]
    assign[0][: sizes[0]] = np.arange(sizes[0])  # no empty cluster
    parents: list[np.ndarray] = []
    for below, above in itertools.pairwise(sizes):
        up = rng.integers(0, above, below)
        up[:above] = np.arange(above)
        parents.append(up)
    words = {
        f"L1-{k}": [WORDS[k % len(WORDS)], WORDS[(k // len(WORDS)) % len(WORDS)]] for k in range(sizes[0])
    }
    clusters: list[dict[str, Any]] = []
    members: dict[str, list[int]] = {}
    for k in range(sizes[0]):
        members[f"L1-{k}"] = np.flatnonzero(assign[0] == k).tolist()
    for level, up in enumerate(parents, start=2):
        for k in range(sizes[level - 1]):
            kids = np.flatnonzero(up == k)
            members[f"L{level}-{k}"] = sorted(i for c in kids for i in members[f"L{level - 1}-{c}"])
            words[f"L{level}-{k}"] = words[f"L{level - 1}-{kids[0]}"][:1]
    n_neurons = sum(c for _, c in LAYERS)
    names = [(name, ch) for name, count in LAYERS for ch in range(count)]
    column = {name: j for j, name in enumerate(names)}
    groups: dict[str, set[int]] = {}
    for level in range(len(sizes), 0, -1):
        for k in range(sizes[level - 1]):
            cid = f"L{level}-{k}"
            parent = f"L{level + 1}-{parents[level - 1][k]}" if level < len(sizes) else None
            base = groups[parent] if parent else set()
            extra = set(rng.choice(n_neurons, size=8, replace=False).tolist())
            groups[cid] = base | extra
    for level in range(1, len(sizes) + 1):
        for k in range(sizes[level - 1]):
            cid = f"L{level}-{k}"
            parent = f"L{level + 1}-{parents[level - 1][k]}" if level < len(sizes) else None
            children = (
                [f"L{level - 1}-{c}" for c in np.flatnonzero(parents[level - 2] == k)] if level > 1 else []
            )
            n = len(members[cid])
            neurons = []
            for j in sorted(groups[cid]):
                kcount = int(rng.integers(max(1, n // 2), n + 1))
                neurons.append(
                    {
                        "layer": names[j][0],
                        "channel": names[j][1],
                        "support": kcount / n,
                        "evidence": _evidence(rng, kcount, n),
                    }
                )
            difference = groups[cid] - (groups[parent] if parent else set())
            label = " ".join(["a photo of", *words[cid], f"scene {cid}"])
            clusters.append(
                {
                    "id": cid,
                    "level": level,
                    "parent": parent,
                    "children": children,
                    "size": n,
                    "images": [ids[i] for i in members[cid]],
                    "label": label,
                    "label_source": "offline",
                    "label_model": None,
                    "label_prompt_version": None,
                    "label_warning": None,
                    "label_quality": round(float(rng.uniform(0.5, 1.0)), 3),
                    "neurons": neurons,
                    "difference_neurons": [
                        x for x in neurons if column[(x["layer"], x["channel"])] in difference
                    ]
                    if parent
                    else [],
                    "difference_description": f"{words[cid][-1]} things" if parent else None,
                    "difference_source": "offline" if parent else None,
                    "uncertainty": {
                        "stability": round(float(rng.uniform(0.4, 1.0)), 3),
                        "causal": {
                            "images": min(8, n),
                            "random_sets": 8,
                            "group_drop": 1.2,
                            "random_drop_mean": 0.4,
                            "random_drop_sd": 0.2,
                            "effect": round(float(rng.uniform(0, 2)), 3),
                            "interval": [0.1, 1.9],
                            "p_value": float(rng.uniform(0.0001, 0.3)),
                            "significant": True,
                            "keep_only": {
                                "group_drop": 2.0,
                                "random_drop_mean": 1.0,
                                "effect": 1.0,
                                "interval": [0.5, 1.5],
                                "p_value": 0.02,
                                "significant": True,
                            },
                        },
                        "difference_test": {
                            "child_carrier_share": 0.8,
                            "sibling_carrier_share": 0.3,
                            "p_value": 0.001,
                            "significant": True,
                        }
                        if parent
                        else None,
                    },
                }
            )
    leaf_of = assign[0]
    hierarchy = {
        "schema_version": "1.5",
        "created_at": "2026-01-01T00:00:00Z",
        "generator": {"name": "synthetic", "version": "0"},
        "options": {},
        "models": {"target": {"architecture": "resnet18", "weights": "synthetic"}},
        "layers": [{"name": name, "channels": count} for name, count in LAYERS],
        "images": [
            {
                "id": image_id,
                "file_name": f"img_{i:05d}.jpg",
                "caption": "a photo of " + " and ".join(words[f"L1-{leaf_of[i]}"]),
                "caption_source": "provided",
            }
            for i, image_id in enumerate(ids)
        ],
        "skipped": [],
        "labelling": {"source": "offline", "quality": None},
        "levels": [{"level": i + 1, "clusters": s} for i, s in enumerate(sizes)],
        "clusters": clusters,
        "uncertainty": {"summary": {"reliable_share": 0.5, "mean_stability": 0.7}},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "hierarchy.json").write_text(json.dumps(hierarchy))
    for shard, start in enumerate(range(0, images, SHARD)):
        chunk = ids[start : start + SHARD]
        put_npz(
            store,
            f"activations/{shard:05d}.npz",
            image_ids=np.array(chunk, dtype="U64"),
            pooled=rng.random((len(chunk), n_neurons), dtype=np.float32).astype(np.float16),
            layer_names=np.array([name for name, _ in LAYERS]),
            layer_channels=np.array([count for _, count in LAYERS], dtype=np.int64),
        )
    if thumbs:
        palette = [_thumb(i) for i in range(len(WORDS))]  # a colour per leaf word: cheap, and visible
        for i, image_id in enumerate(ids):
            store.put_bytes(thumbnail_key(image_id), palette[int(leaf_of[i]) % len(WORDS)])
    return hierarchy


def _thumb(i: int) -> bytes:
    hue = int(255 * i / len(WORDS))
    image = Image.new("HSV", (200, 150), (hue, 160, 210)).convert("RGB")
    for x in range(0, 200, 20):  # stripes, so a thumbnail is visibly a picture
        image.paste((255, 255, 255), (x, 60, x + 8, 90))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return thumbnail_bytes(Image.open(io.BytesIO(buffer.getvalue())))
