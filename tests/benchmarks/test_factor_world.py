"""Factor world (benchmarks/factor_world.py): generated images whose shape and colour decide the
class, and a resnet18 trained on them, so the statistics can be checked against learned concept
detectors. The generator's tests are quick; the rest share one training run (the session's
`factor_model` fixture, 1.5 to 2.5 min on 2 cores)."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import subprocess
import sys
from itertools import product
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.factor_world import (
    BACKGROUNDS,
    CLASS_NAMES,
    COLOURS,
    FACTORS,
    SHAPES,
    TEXTURES,
    FactorModel,
    Factors,
    cluster_purity,
    edited_checkpoint,
    generate,
    level_clusters,
    read_factors,
    shuffled_purity,
    trained_factor_model,
    write_folder,
)
from neuron_core.hooks import ActivationReader, preprocess
from neuron_core.target_model import load_target_model

# Words by which a caption names each factor's value (any one of them will do).
NAMES = {
    "plain": ("plain", "solid", "no pattern"),
    "stripes": ("stripe", "stripy"),
    "dots": ("dot", "spotted"),
    "sand": ("sand",),
    "grass": ("grass", "lawn"),
    "night sky": ("night",),
    "water": ("water",),
}


def test_the_label_is_shape_and_colour_and_nothing_else(tmp_path: Path) -> None:
    collection = generate(384, seed=3)
    assert len(set(collection.factors)) == 192  # every combination, twice each
    for factors, label in zip(collection.factors, collection.labels, strict=True):
        assert CLASS_NAMES[label] == f"{factors.colour} {factors.shape}"
    # texture and background never change the label; shape and colour always do
    labels = {
        (s, c, t, b): Factors(s, c, t, b).label
        for s, c, t, b in product(SHAPES, COLOURS, TEXTURES, BACKGROUNDS)
    }
    assert len(set(labels.values())) == len(CLASS_NAMES) == 16
    for (s, c, _, _), label in labels.items():
        assert {labels[s, c, t, b] for t in TEXTURES for b in BACKGROUNDS} == {label}
    # and the folder the CLI reads says the same, with every factor beside the label
    folder = write_folder(generate(32, seed=4), tmp_path / "images")
    with (folder / "metadata.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 32 and len(list(folder.glob("*.png"))) == 32
    for row in rows:
        assert int(row["label"]) == Factors(*(row[f] for f in FACTORS)).label
        assert Image.open(folder / row["file_name"]).size == (64, 64)
    assert read_factors(folder) == {row["file_name"]: Factors(*(row[f] for f in FACTORS)) for row in rows}


def test_the_pixels_show_the_colour() -> None:
    """Of the four colours, the image's own has the most pixels near it, on every background
    (green on grass and blue on water included)."""
    collection = generate(192, seed=5)
    for pixels, factors in zip(collection.pixels, collection.factors, strict=True):
        rgb = pixels.reshape(-1, 3).astype(float)
        near = {c: int((np.linalg.norm(rgb - value, axis=1) < 32).sum()) for c, value in COLOURS.items()}
        assert max(near, key=near.__getitem__) == factors.colour, (factors, near)


def test_the_same_seed_draws_the_same_images_and_captions() -> None:
    a, b, c = generate(40, seed=1), generate(40, seed=1), generate(40, seed=2)
    assert np.array_equal(a.pixels, b.pixels) and a.captions == b.captions
    assert not np.array_equal(a.pixels, c.pixels)


def test_every_caption_names_its_four_factors_and_no_other_value() -> None:
    collection = generate(400, seed=6)
    for text, factors in zip(collection.captions, collection.factors, strict=True):
        words = " ".join(re.findall(r"[a-z]+", text.lower()))
        assert re.search(rf"\b{factors.shape}\b", words) and re.search(rf"\b{factors.colour}\b", words), text
        assert any(n in words for n in NAMES[factors.texture]), text
        assert any(n in words for n in NAMES[factors.background]), text
        others = [rf"\b{v}\b" for v in (*SHAPES, *COLOURS) if v not in (factors.shape, factors.colour)]
        others += [
            n
            for v in (*TEXTURES, *BACKGROUNDS)
            if v not in (factors.texture, factors.background)
            for n in NAMES[v]
        ]
        assert not [o for o in others if re.search(o, words)], text
    # varied wording: many distinct sentence shapes for one combination of factors
    same = [
        t for t, f in zip(collection.captions, collection.factors, strict=True) if f == collection.factors[0]
    ]
    assert len(set(same)) == len(same) >= 2
    assert len(set(collection.captions)) > 0.9 * len(collection.captions)


@pytest.mark.slow
def test_the_trained_model_classifies_held_out_images_through_the_product_loader(
    factor_model: FactorModel,
) -> None:
    record = json.loads((factor_model.weights.parent / "model.json").read_text())
    assert record["architecture"] == "resnet18" and record["class_names"] == list(CLASS_NAMES)
    loaded = load_target_model(
        "resnet18", str(factor_model.weights), preprocessing=factor_model.preprocessing
    )
    assert loaded.record().num_classes == 16 and loaded.source == "file"
    names = list(factor_model.factors)
    labels = np.array([factor_model.factors[n].label for n in names])
    predicted = []
    with torch.inference_mode():
        for start in range(0, len(names), 128):
            images = [Image.open(factor_model.images / n).convert("RGB") for n in names[start : start + 128]]
            predicted.append(loaded.module(preprocess(images, loaded.preprocessing)).argmax(1).numpy())
    accuracy = float((np.concatenate(predicted) == labels).mean())
    assert accuracy >= 0.9, accuracy
    assert abs(accuracy - factor_model.heldout_accuracy) <= 1 / len(names), (accuracy, record)


@pytest.mark.slow
def test_a_cli_run_on_factor_images_gives_clusters_pure_in_a_factor(
    factor_model: FactorModel, tmp_path: Path
) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    with (factor_model.images / "metadata.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)[:96]
        columns = list(reader.fieldnames or ())
    for row in rows:
        (folder / row["file_name"]).write_bytes((factor_model.images / row["file_name"]).read_bytes())
    with (folder / "metadata.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "out"
    command = [
        str(Path(sys.executable).with_name("neuron-atlas")),
        *("run", str(folder), "--out", str(out), "--device", "cpu"),
        *("--weights", str(factor_model.weights), "--preprocessing", factor_model.preprocessing_json()),
        *("--bootstrap-resamples", "20", "--mc-samples", "0", "--tta-samples", "0"),
        *("--ablation-random-sets", "0"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    hierarchy = json.loads((out / "hierarchy.json").read_text())
    target = hierarchy["models"]["target"]
    assert target["source"] == "file" and target["num_classes"] == 16
    assert target["preprocessing"]["input_size"] == 64
    assert {image["label"] for image in hierarchy["images"]} <= {str(i) for i in range(16)}
    clusters = level_clusters(hierarchy, level=1)
    purity = cluster_purity(clusters, factor_model.factors)
    chance = shuffled_purity(clusters, factor_model.factors)  # the same sizes, images at random
    sizes = sorted(len(c) for c in clusters)
    print(f"\nlevel-1 clusters: {len(clusters)}, sizes {sizes}\npurity {purity}\nby chance {chance}")
    if level_2 := level_clusters(hierarchy, level=2):  # for the record: how the next level groups
        print(f"level 2: {len(level_2)} clusters, purity {cluster_purity(level_2, factor_model.factors)}")
    assert sum(sizes) == 96 and max(sizes) >= 2
    assert purity["best"] >= 0.9 and purity["best"] >= chance["best"] + 0.15, (purity, chance)


@pytest.mark.slow
def test_an_edited_checkpoint_silences_only_the_named_channels(
    factor_model: FactorModel, tmp_path: Path
) -> None:
    silenced = [1, 7, 30]
    # conv2 of layer3's first block, and every writer of layer4's residual stream
    zero = {"layer3.0.conv2": silenced} | {
        name: silenced for name in ("layer4.0.conv2", "layer4.0.downsample.0", "layer4.1.conv2")
    }
    edited = edited_checkpoint(factor_model.weights, tmp_path / "edited.safetensors", zero)
    prep = factor_model.preprocessing
    layers = ["layer2", "layer3.0.conv1", "layer3.0.conv2", "layer3.0.bn2", "layer3", "layer4"]
    images = preprocess(
        [Image.open(factor_model.images / n).convert("RGB") for n in list(factor_model.factors)[:32]], prep
    )

    def read(weights: Path) -> dict[str, torch.Tensor]:
        module = load_target_model("resnet18", str(weights), preprocessing=prep).module
        with ActivationReader(module, layers) as reader:
            sizes = [info.channels for info in reader.layer_infos(torch.device("cpu"), prep.input_size)]
            return dict(zip(layers, reader.read(images).split(sizes, dim=1), strict=True))

    before, after = read(factor_model.weights), read(edited)
    kept = [c for c in range(256) if c not in silenced]
    for layer in ("layer3.0.conv2", "layer3.0.bn2"):
        assert torch.all(after[layer][:, silenced] == 0), layer
        assert torch.all(before[layer][:, silenced].abs().sum(0) > 0), layer  # it was not silent
        assert torch.equal(after[layer][:, kept], before[layer][:, kept]), layer
    for layer in ("layer2", "layer3.0.conv1"):  # before the edit: unchanged
        assert torch.equal(after[layer], before[layer]), layer
    assert not torch.equal(after["layer3"], before["layer3"])  # the edit reaches further on
    assert torch.all(after["layer4"][:, silenced] == 0) and torch.all(
        before["layer4"][:, silenced].sum(0) > 0
    )


def test_an_edit_of_a_layer_that_is_not_a_conv_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from neuron_core.target_model import build_architecture

    weights = tmp_path / "random.safetensors"
    save_file(build_architecture("resnet18", num_classes=16).state_dict(), str(weights))
    with pytest.raises(ValueError, match=r"layer3\.0\.bn2"):
        edited_checkpoint(weights, tmp_path / "edited.safetensors", {"layer3.0.bn2": [0]})
    with pytest.raises(ValueError, match="256 output channels"):
        edited_checkpoint(weights, tmp_path / "edited.safetensors", {"layer3.0.conv2": [256]})
    assert not (tmp_path / "edited.safetensors").exists()


def test_a_trained_model_is_kept_reused_and_repeated_by_its_seed(tmp_path: Path) -> None:
    tiny = {"train_images": 48, "heldout_images": 16, "steps": 3, "batch_size": 8}
    first = trained_factor_model(tmp_path / "a", seed=1, **tiny)
    written = first.weights.stat().st_mtime_ns
    again = trained_factor_model(tmp_path / "a", seed=1, **tiny)
    assert again == first and again.weights.stat().st_mtime_ns == written  # reused, not retrained
    assert [p.name for p in (tmp_path / "a").iterdir()] == [first.weights.parent.name]  # nothing partial
    record = json.loads((first.weights.parent / "model.json").read_text())
    assert record["architecture"] == "resnet18" and record["seed"] == 1
    assert record["class_names"] == list(CLASS_NAMES) and record["preprocessing"]["input_size"] == 64
    assert 0 <= record["heldout_accuracy"] <= 1 and record["seconds"]["train"] > 0
    assert len(first.factors) == 16 == len(list(first.images.glob("*.png")))

    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    same = trained_factor_model(tmp_path / "b", seed=1, **tiny)
    other = trained_factor_model(tmp_path / "b", seed=2, **tiny)
    assert digest(same.weights) == digest(first.weights)  # same seed, same thread count: same bytes
    assert digest(other.weights) != digest(first.weights)
