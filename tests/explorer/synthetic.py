"""A synthetic finished job for the explorer, at any size (the benchmark uses 16,000 images): a
hierarchy.json of the schema-2 contract (tests/explorer/test_atlas.py validates it against
`Hierarchy`), with every field the explorer shows, the caption embeddings (`embeddings.npy`,
each level-1 concept a direction plus noise), pooled activations with active bitsets
(`activations/*.npz`) and WebP thumbnails. Labels are built from a small vocabulary, so a search
finds a known word. The evidence is made up but consistent: the job's summary counts what the
clusters carry, and every collection rate is what the stored bitsets say."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from neuron_atlas_client.contracts.labels import Labelling
from neuron_atlas_client.options import PipelineOptions
from shared.storage.stores import LocalStore, put_npy, put_npz
from shared.storage.thumbnails import pack_key, pack_thumbnails, thumbnail_bytes

LAYERS = [("layer1", 64), ("layer2", 128), ("layer3", 256), ("layer4", 512)]
WORDS = ["dog", "cat", "forest", "snowy", "beach", "city", "street", "red", "boat", "mountain", "bird", "car"]
SHARD = 256
ALPHA, MIN_SUPPORT = 0.05, 0.5
TOO_FEW = 6  # below this many images no count clears min_support (as with Clopper-Pearson at 0.05)
SAMPLED_EVERY = 4  # every 4th image is in the dropout passes' sample
TESTS = {
    "selectivity": "The cluster is a random set of the collection's images.",
    "specificity": "Zeroing the group lowers its held-out images' outputs no more than other images'.",
    "keep_only": "Keeping only the group keeps its held-out images' outputs no better than others'.",
    "difference": "The parent's images are exchangeable between the child and its siblings.",
    "importance": "The group is as important as uniformly drawn neurons.",
}


def level_sizes(concepts: int) -> list[int]:
    """Concepts per level, finest first, each level about a fifth of the one below."""
    sizes, left = [], concepts
    while left > 0:
        top = max(1, round(left * 0.8)) if left > 6 else left
        sizes.append(top)
        left -= top
    return sizes


def _evidence(rng: np.random.Generator, k: int, n: int, rate: float, sampled: bool) -> dict[str, Any]:
    support = k / n
    low, high = max(0.0, support - 0.15), min(1.0, support + 0.1)
    p = float(rng.uniform(1e-6, 0.08))
    q = min(1.0, p * 3)
    return {
        "count": k,
        "interval": [round(low, 4), round(high, 4)],
        "p_value": p,
        "q_value": q,
        "selective": q <= ALPHA,
        "chance_p_value": p / 10,
        "chance_q_value": min(1.0, p / 3),
        "above_chance": True,
        "collection_rate": rate,
        "generic": q > ALPHA,
        "reliable": None if n < TOO_FEW else low >= MIN_SUPPORT,
        "inclusion_probability": round(float(rng.uniform(0.5, 1.0)), 3),
        "expected_support": round(support, 3) if sampled else None,
        "expected_support_sd": 0.05 if sampled else None,
        "augmented_support": round(support * 0.95, 3) if sampled else None,
        "augmented_support_sd": 0.04 if sampled else None,
    }


def _test(status: str, note: str, result: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"status": status, "note": note, "result": result}


def _specificity(rng: np.random.Generator, n: int) -> dict[str, Any]:
    effect = round(float(rng.uniform(-0.5, 1.5)), 4)
    p = float(rng.uniform(0.0001, 0.2))
    return {
        "selection_images": n // 2,
        "test_images": n - n // 2,
        "reference_images": 16,
        "selection_group_size": 12,
        "selection_group_jaccard": 0.8,
        "test_drop": round(1.0 + effect, 4),
        "reference_drop": 1.0,
        "effect": effect,
        "interval": [round(effect - 0.4, 4), round(effect + 0.4, 4)],
        "p_value": p,
        "min_p_value": 0.0001,
        "q_value": min(1.0, p * 2),
        "significant": p * 2 <= ALPHA,
        "keep_only": {
            "test_drop": 2.0,
            "reference_drop": 2.5,
            "effect": 0.5,
            "interval": [0.1, 0.9],
            "p_value": 0.01,
            "q_value": 0.02,
            "significant": True,
        },
        "equally_active_drop": 1.1,
        "drop_per_activation": 0.011,
        "equally_active_drop_per_activation": 0.01,
    }


def _difference(rng: np.random.Generator) -> dict[str, Any]:
    p = float(rng.uniform(0.001, 0.3))
    return {
        "child_support": 0.8,
        "sibling_support": 0.3,
        "statistic": 0.5,
        "child_carrier_share": 0.8,
        "sibling_carrier_share": 0.3,
        "permutations": 199,
        "p_value": p,
        "min_p_value": 0.005,
        "q_value": min(1.0, p * 2),
        "significant": p * 2 <= ALPHA,
    }


def _outputs(agreement: float) -> dict[str, Any]:
    agreement = round(min(1.0, max(0.0, agreement)), 4)
    return {
        "top1_agreement": agreement,
        "mean_abs_logit_change": round(1 - agreement, 4),
        "top_logit_drop": round(2 * (1 - agreement), 4),
        "top1_accuracy": None,
    }


def _outcome(rng: np.random.Generator, share: float, pruned: int, sets: int) -> dict[str, Any]:
    draws = [_outputs(1 - share * float(rng.uniform(0.7, 1.1))) for _ in range(sets)]
    values = np.array([d["top1_agreement"] for d in draws])
    mean, lower, upper = (
        float(f(values)) for f in (np.mean, lambda v: np.percentile(v, 2.5), lambda v: np.percentile(v, 97.5))
    )
    return {
        "neurons_pruned": pruned,
        "share_pruned": round(share, 6),
        "significance": _outputs(1 - share * 0.3),
        "random": {"mean": _outputs(mean), "lower": _outputs(lower), "upper": _outputs(upper), "sets": draws},
        "least_active": _outputs(1 - share * 0.5),
    }


def _pruning(rng: np.random.Generator, heldout: int) -> dict[str, Any]:
    """A curve at three q thresholds, each layer alone too; random prunings with a spread."""
    total = sum(c for _, c in LAYERS)
    sets = 20
    curve = []
    for q, share in ((0.01, 0.72), (0.05, 0.6), (0.2, 0.41)):
        layers = [
            {
                **_outcome(rng, share + 0.05 * i, round((share + 0.05 * i) * c), sets),
                "layer": name,
                "channels": c,
            }
            for i, (name, c) in enumerate(LAYERS)
        ]
        curve.append({**_outcome(rng, share, round(share * total), sets), "q_threshold": q, "layers": layers})
    at_alpha = curve[1]
    loses = at_alpha["significance"]["top1_agreement"] < 0.95
    return {
        "alpha": ALPHA,
        "heldout_images": heldout,
        "selection_images": heldout,
        "labelled_images": 0,
        "random_sets": sets,
        "unpruned_top1_accuracy": None,
        "at_alpha": at_alpha,
        "curve": curve,
        "verdict": {
            "measure": "top1_agreement",
            "tolerance": 0.01,
            "loses": loses,
            "loses_at": [p["q_threshold"] for p in curve if p["significance"]["top1_agreement"] < 0.99],
            "worst_layer": "layer4" if loses else None,
            "sentence": f"pruning by significance at q <= {ALPHA} ({at_alpha['neurons_pruned']} of {total} "
            f"neurons) keeps top-1 agreement at {at_alpha['significance']['top1_agreement']:.2f} on "
            f"{heldout} held-out images (synthetic).",
        },
    }


def _counts(states: list[dict[str, Any]]) -> dict[str, int]:
    tested = [s for s in states if s["status"] == "tested"]
    return {
        "tested": len(tested),
        "significant": sum(1 for s in tested if s["result"]["significant"]),
        "not_tested_budget": sum(1 for s in states if s["status"] == "budget"),
        "not_tested_too_few_images": sum(1 for s in states if s["status"] == "too_few_images"),
    }


def _active_mask(pooled: np.ndarray) -> np.ndarray:
    """Each image's top 10% of each layer (the method's per-layer rule)."""
    mask = np.zeros(pooled.shape, dtype=bool)
    offset = 0
    for _, channels in LAYERS:
        block = pooled[:, offset : offset + channels]
        k = max(1, round(0.1 * channels))
        top = np.argpartition(-block, k - 1, axis=1)[:, :k]
        np.put_along_axis(mask[:, offset : offset + channels], top, True, axis=1)
        offset += channels
    return mask


def make_job(
    out: Path, images: int, concepts: int, seed: int = 0, thumbs: bool = True, dimension: int = 384
) -> dict[str, Any]:
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
    members: dict[str, list[int]] = {}
    for k in range(sizes[0]):
        members[f"L1-{k}"] = np.flatnonzero(assign[0] == k).tolist()
    for level, up in enumerate(parents, start=2):
        for k in range(sizes[level - 1]):
            kids = np.flatnonzero(up == k)
            members[f"L{level}-{k}"] = sorted(i for c in kids for i in members[f"L{level - 1}-{c}"])
            words[f"L{level}-{k}"] = words[f"L{level - 1}-{kids[0]}"][:1]

    n_neurons = sum(c for _, c in LAYERS)
    pooled = rng.random((images, n_neurons), dtype=np.float32)
    offsets = np.cumsum([0] + [c for _, c in LAYERS[:-1]])
    pooled[:, offsets] += 1.0  # channel 0 of each layer: active in every image (frequent)
    mask = _active_mask(pooled)
    rates = np.round(mask.mean(axis=0), 6)
    names = [(name, ch) for name, count in LAYERS for ch in range(count)]
    column = {name: j for j, name in enumerate(names)}
    sampled = set(range(0, images, SAMPLED_EVERY))
    entropy = {i: (round(float(rng.uniform(1, 3)), 4), round(float(rng.uniform(0, 0.2)), 4)) for i in sampled}

    groups: dict[str, set[int]] = {}
    for level in range(len(sizes), 0, -1):
        for k in range(sizes[level - 1]):
            cid = f"L{level}-{k}"
            parent = f"L{level + 1}-{parents[level - 1][k]}" if level < len(sizes) else None
            base = groups[parent] if parent else {0}  # layer1/0, frequent, is in every group
            groups[cid] = base | set(rng.choice(n_neurons, size=8, replace=False).tolist())
    # the budget tests the largest testable concepts first; a third of them fit
    testable = sorted((c for c in members if len(members[c]) >= TOO_FEW), key=lambda c: -len(members[c]))
    budgeted = set(testable[: max(1, len(testable) // 3)])
    clusters: list[dict[str, Any]] = []
    for level in range(1, len(sizes) + 1):
        for k in range(sizes[level - 1]):
            cid = f"L{level}-{k}"
            parent = f"L{level + 1}-{parents[level - 1][k]}" if level < len(sizes) else None
            children = (
                [f"L{level - 1}-{c}" for c in np.flatnonzero(parents[level - 2] == k)] if level > 1 else []
            )
            rows = members[cid]
            n = len(rows)
            in_sample = [i for i in rows if i in sampled]
            neurons = []
            for j in sorted(groups[cid]):
                kcount = int(rng.integers(max(1, n // 2), n + 1))
                neurons.append(
                    {
                        "layer": names[j][0],
                        "channel": names[j][1],
                        "support": kcount / n,
                        "evidence": _evidence(rng, kcount, n, float(rates[j]), bool(in_sample)),
                    }
                )
            difference = groups[cid] - (groups[parent] if parent else set())
            if n < TOO_FEW:
                specificity = _test("too_few_images", f"not tested: {n} images")
            elif cid in budgeted:
                specificity = _test("tested", "tested", _specificity(rng, n))
            else:
                specificity = _test("budget", "not tested: budget")
            clusters.append(
                {
                    "id": cid,
                    "level": level,
                    "parent": parent,
                    "children": children,
                    "size": n,
                    "images": [ids[i] for i in rows],
                    "label": " ".join(["a photo of", *words[cid], f"scene {cid}"]),
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
                        "group_stability": round(float(rng.uniform(0.4, 1.0)), 3),
                        "clustering_stability": round(float(rng.uniform(0.3, 1.0)), 3),
                        "specificity": specificity,
                        "importance": _test("off", "not run: runs with --uncertainty-budget full"),
                        "difference_test": None
                        if parent is None
                        else _test("tested", "tested", _difference(rng))
                        if n >= 2
                        else _test("too_few_images", f"not tested: {n} images"),
                        "model_uncertainty": {
                            "images": len(in_sample),
                            "total": round(float(np.mean([sum(entropy[i]) for i in in_sample])), 6),
                            "expected_entropy": round(float(np.mean([entropy[i][0] for i in in_sample])), 6),
                            "mutual_information": round(
                                float(np.mean([entropy[i][1] for i in in_sample])), 6
                            ),
                        }
                        if in_sample
                        else None,
                    },
                }
            )
    hierarchy = {
        "schema_version": "2.0",
        "created_at": "2026-01-01T00:00:00Z",
        "generator": {"name": "synthetic", "version": "0"},
        "options": PipelineOptions().model_dump(mode="json"),
        "models": {
            "captioner": {"id": "provided", "images_captioned": 0},
            "embedder": {"id": "synthetic", "source": "tests/explorer/synthetic.py", "dimension": dimension},
            "target": {"architecture": "resnet18", "weights": "synthetic", "num_classes": 1000},
        },
        "layers": [{"name": name, "channels": count} for name, count in LAYERS],
        "images": [
            {
                "id": image_id,
                "file_name": f"img_{i:05d}.jpg",
                "caption": "a photo of " + " and ".join(words[f"L1-{assign[0][i]}"]),
                "caption_source": "provided",
                **(
                    {
                        "model_uncertainty": {
                            "total": round(sum(entropy[i]), 6),
                            "expected_entropy": entropy[i][0],
                            "mutual_information": entropy[i][1],
                        }
                    }
                    if i in sampled
                    else {}
                ),
            }
            for i, image_id in enumerate(ids)
        ],
        "skipped": [],
        "labelling": Labelling.offline().model_dump(mode="json"),
        "levels": [{"level": i + 1, "clusters": s} for i, s in enumerate(sizes)],
        "clusters": clusters,
        "uncertainty": _job_uncertainty(rng, clusters, images, rates),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "hierarchy.json").write_text(json.dumps(hierarchy))
    centres = rng.normal(size=(sizes[0], dimension)).astype(np.float32)
    embeddings = centres[assign[0]] + 0.8 * rng.normal(size=(images, dimension)).astype(np.float32)
    put_npy(store, "embeddings.npy", embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True))
    for shard, start in enumerate(range(0, images, SHARD)):
        chunk = slice(start, start + SHARD)
        put_npz(
            store,
            f"activations/{shard:05d}.npz",
            image_ids=np.array(ids[chunk], dtype="U64"),
            pooled=pooled[chunk].astype(np.float16),
            active_bits=np.packbits(mask[chunk], axis=1),
            layer_names=np.array([name for name, _ in LAYERS]),
            layer_channels=np.array([count for _, count in LAYERS], dtype=np.int64),
        )
    if thumbs:
        palette = [_thumb(i) for i in range(len(WORDS))]  # a colour per leaf word: cheap, and visible
        shown = [(image_id, palette[int(assign[0][i]) % len(WORDS)]) for i, image_id in enumerate(ids)]
        for shard, start in enumerate(range(0, len(shown), 256)):  # as a run packs them, per shard
            store.put_bytes(pack_key(shard), pack_thumbnails(shown[start : start + 256]))
    return hierarchy


def _job_uncertainty(
    rng: np.random.Generator, clusters: list[dict[str, Any]], images: int, rates: np.ndarray
) -> dict[str, Any]:
    """The job's method, plan, summary (counted from the clusters) and pruning curve."""
    evidence = [n["evidence"] for c in clusters for n in c["neurons"]]
    decided = [e["reliable"] for e in evidence if e["reliable"] is not None]
    states = [c["uncertainty"] for c in clusters]
    specificity = [s["specificity"] for s in states]
    keep = [{**s, "result": s["result"]["keep_only"]} if s["status"] == "tested" else s for s in specificity]
    sampled = len(range(0, images, SAMPLED_EVERY))
    spec = _counts(specificity)
    return {
        "method": {
            "alpha": ALPHA,
            "interval": "clopper_pearson",
            "tests": [
                {
                    "name": name,
                    "null": null,
                    "statistic": "synthetic",
                    "multiple_testing": "Benjamini-Hochberg",
                }
                for name, null in TESTS.items()
            ],
            "chance_rate": {name: 0.1 for name, _ in LAYERS},
            "bootstrap_resamples": 200,
            "bootstrap": "images resampled within each level-1 cluster",
            "clustering_resamples": 10,
            "generic": "a membership is generic when it is not selective (q_value > alpha)",
            "model_uncertainty": {
                "method": "injected_dropout",
                "interpretation": "sensitivity to feature dropout",
                "samples": 8,
                "images": sampled,
                "dropout_rate": 0.1,
                "calibration": None,
            },
            "input_sensitivity": {"method": "tta", "samples": 4, "images": sampled},
            "pass_precision": "bfloat16",
            "seed": 0,
        },
        "plan": {
            "budget": 1.5,
            "allowed": 1.5 * images,
            "planned": 1.4 * images,
            "pass_costs": {"full": 0.5, "prefix": 0.16, "partial": 0.34},
            "steps": [
                {"name": "statistics", "ran": True, "images": images, "note": ""},
                {"name": "group bootstrap", "ran": True, "images": images, "note": "200 resamples"},
                {"name": "clustering resamples", "ran": True, "images": images, "note": "10 FINCH runs"},
                {"name": "difference tests", "ran": True, "note": "up to 999 permutations each"},
                {
                    "name": "dropout and augmentation passes",
                    "ran": True,
                    "images": sampled,
                    "cost": 0.5 * images,
                    "note": f"a seeded sample of {sampled} of {images} images",
                },
                {
                    "name": "pruning curve",
                    "ran": True,
                    "images": images // 4,
                    "cost": 0.4 * images,
                    "note": f"{images // 4} held-out images",
                },
                {
                    "name": "specificity tests",
                    "ran": True,
                    "cost": 0.5 * images,
                    "tested": spec["tested"],
                    "not_tested_budget": spec["not_tested_budget"],
                    "not_tested_too_few_images": spec["not_tested_too_few_images"],
                    "note": "largest concepts first, then the highest level",
                },
                {"name": "importance tests", "ran": False, "note": "runs with --uncertainty-budget full"},
            ],
        },
        "summary": {
            "memberships": len(evidence),
            "reliable_share": round(sum(decided) / len(evidence), 6) if evidence else None,
            "too_few_images_share": round(
                sum(1 for e in evidence if e["reliable"] is None) / len(evidence), 6
            )
            if evidence
            else None,
            "selective_share": round(sum(1 for e in evidence if e["selective"]) / len(evidence), 6)
            if evidence
            else None,
            "above_chance_share": 1.0,
            "frequent_neurons": int((rates >= MIN_SUPPORT).sum()),
            "generic_memberships": sum(1 for e in evidence if e["generic"]),
            "mean_group_stability": round(float(np.mean([s["group_stability"] for s in states])), 6),
            "mean_clustering_stability": round(
                float(np.mean([s["clustering_stability"] for s in states])), 6
            ),
            "specificity": spec,
            "keep_only": _counts(keep),
            "importance": _counts([s["importance"] for s in states]),
            "difference": _counts([s["difference_test"] for s in states if s["difference_test"]]),
        },
        "pruning": _pruning(rng, images // 4),
    }


def _thumb(i: int) -> bytes:
    hue = int(255 * i / len(WORDS))
    image = Image.new("HSV", (200, 150), (hue, 160, 210)).convert("RGB")
    for x in range(0, 200, 20):  # stripes, so a thumbnail is visibly a picture
        image.paste((255, 255, 255), (x, 60, x + 8, 90))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return thumbnail_bytes(Image.open(io.BytesIO(buffer.getvalue())))
