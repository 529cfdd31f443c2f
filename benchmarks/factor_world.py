"""Factor world: generated images whose factors decide a class, and a model trained on them.

The planted model (tests.tiny_models.planted_net) plants its concept detectors; a model trained
here learns its own, so the statistics can be validated against detectors nobody wrote.

Every image is one shape (circle, square, triangle, star) in one colour (red, green, blue,
yellow) with one texture (plain, stripes, dots) on one background (sand, grass, night sky,
water), at a random position, size and rotation, with pixel noise. The class is shape x colour
(16 classes); texture and background do not decide it, so the model need not learn them (a
contrast for the statistics). Each image's caption names all four factors in varied wording.

    trained_factor_model(folder)  # trains once, then reuses it
    python -m benchmarks.factor_world --out DIR  # the same, and prints model.json

gives a `FactorModel`: a torchvision resnet18 state dict (safetensors) that loads through the
product's loader, its preprocessing, and a folder of held-out images with metadata.csv
(file_name, caption, label and the four factors) that `neuron-atlas run` takes as is.
`edited_checkpoint` silences chosen channels of a checkpoint, for model-comparison tests.

Measured on the project's 2-core build machine (2026-12-07, shared with other work, load 3 to
5), data generation included: 135 to 150 s wall and 155 to 160 s of CPU time for 700 steps of 16
images; CPU time / 2 suggests about 85 s on 2 idle cores (not measured: the machine was never
idle). Held-out top-1: 0.974 (seed 0), 0.986, 0.983, 0.981 (seeds 1 to 3). Two runs of one seed
gave bit-identical weights. At 600 steps seed 1 reached only 0.905: shape is learned late and
suddenly, colour within the first 100 steps.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F

from neuron_atlas_client.contracts.models import Preprocessing
from neuron_core.hooks import normalise
from neuron_core.target_model import LoadedModel, build_architecture, load_target_model, read_state_dict

# The shapes' colours and the sand and night sky are neuron_atlas/sample.py's; grass is olive
# and water teal, so that a green or a blue shape stands out from them.
SHAPES = ("circle", "square", "triangle", "star")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (210, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 210),
    "yellow": (235, 210, 40),
}
TEXTURES = ("plain", "stripes", "dots")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "sand": (225, 205, 160),
    "grass": (95, 115, 40),
    "night sky": (15, 15, 45),
    "water": (30, 125, 135),
}
FACTORS = ("shape", "colour", "texture", "background")
#: Class index = shape index x len(COLOURS) + colour index.
CLASS_NAMES = tuple(f"{colour} {shape}" for shape in SHAPES for colour in COLOURS)


@dataclass(frozen=True)
class Factors:
    """The four factors of one image; `label` is its class (shape and colour decide it)."""

    shape: str
    colour: str
    texture: str
    background: str

    @property
    def label(self) -> int:
        return SHAPES.index(self.shape) * len(COLOURS) + list(COLOURS).index(self.colour)

    def value(self, factor: str) -> str:
        return str(getattr(self, factor))


def balanced_factors(n: int, rng: np.random.Generator) -> list[Factors]:
    """`n` factor combinations in random order: each of the 16 classes equally often (to within
    one), textures and backgrounds as evenly as `n` allows, every one of the 192 combinations
    once in each 192."""
    factors = []
    for i in range(n):
        label, j = i % len(CLASS_NAMES), i // len(CLASS_NAMES)
        factors.append(
            Factors(
                shape=SHAPES[label // len(COLOURS)],
                colour=list(COLOURS)[label % len(COLOURS)],
                texture=TEXTURES[j % len(TEXTURES)],  # 3 and 4 are coprime: 12 steps of j
                background=list(BACKGROUNDS)[j % len(BACKGROUNDS)],  # give every pair once
            )
        )
    return [factors[i] for i in rng.permutation(n)]


# --- Drawing ---------------------------------------------------------------------------------

SUPERSAMPLE = 4  # the shape is drawn at 4x and averaged down, so its edges are anti-aliased
MAX_TURN = np.radians(20)  # rotation, either way: small, like the other nuisances
RADIUS = (0.24, 0.33)  # the shape's radius, as a share of the side
SHADE = 0.3  # how much darker the stripes and dots are than the shape
WAVE, BLADE = 12.0, 25.0  # the brightness swing of the water's waves and the grass's blades


def _background(name: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """The background as float RGB (size, size, 3), with its own texture: grains of sand, blades
    of grass, stars in the night sky, bands of waves on water."""
    base = np.array(BACKGROUNDS[name], dtype=np.float32)
    image = base + rng.normal(0, 8, (size, size, 3)).astype(np.float32)
    if name == "sand":
        image += rng.normal(0, 14, (size, size, 1)).astype(np.float32)  # grey grain
    elif name == "grass":
        for _ in range(size // 2):
            x, y = int(rng.integers(size)), int(rng.integers(size))
            image[y : y + int(rng.integers(3, 8)), x] += rng.choice([-BLADE, BLADE]) * np.array([0.5, 1, 0.4])
    elif name == "night sky":
        stars = rng.integers(size, size=(int(rng.integers(6, 14)), 2))
        image[stars[:, 0], stars[:, 1]] = 235.0
    else:
        rows = np.arange(size, dtype=np.float32)[:, None, None]
        image += WAVE * np.sin(rows * 0.9 + rng.uniform(0, 2 * np.pi)) * np.array([0.4, 0.7, 1.0])
    return image


def _outline(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """The shape's polygon (a circle: 48 sides) around (cx, cy), turned by `angle` radians."""
    if shape == "circle":
        turns = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        radii = np.full(48, r)
    elif shape == "square":
        turns, radii = np.arange(4) * np.pi / 2 + np.pi / 4, np.full(4, r)
    elif shape == "triangle":
        turns, radii = np.arange(3) * 2 * np.pi / 3 - np.pi / 2, np.full(3, 1.15 * r)
    else:  # a five-pointed star
        turns = np.arange(10) * np.pi / 5 - np.pi / 2
        radii = np.where(np.arange(10) % 2 == 0, 1.2 * r, 0.5 * r)
    turns = turns + angle
    return [(cx + rad * np.cos(t), cy + rad * np.sin(t)) for t, rad in zip(turns, radii, strict=True)]


def _pattern(
    texture: str, rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray, angle: float
) -> np.ndarray:
    """Where the shape takes its darker shade, at pixel coordinates `xs`, `ys` (booleans)."""
    if texture == "plain":
        return np.zeros(xs.shape, dtype=bool)
    if texture == "stripes":
        along = (
            xs * np.float32(np.cos(angle)) + ys * np.float32(np.sin(angle)) + np.float32(rng.uniform(0, 6))
        )
        return (along % 6) < 3
    dot_x, dot_y = (xs + np.float32(rng.uniform(0, 6))) % 6 - 3, (ys + np.float32(rng.uniform(0, 6))) % 6 - 3
    return dot_x**2 + dot_y**2 < 1.6**2


def draw(factors: Factors, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """One image as uint8 RGB (size, size, 3). Nuisance variation: the shape's position, size
    (radius 24% to 33% of the side), rotation (up to 20 degrees either way), a slight colour
    jitter, and pixel noise."""
    r = rng.uniform(*RADIUS) * size
    cx, cy = (rng.uniform(r + 2, size - r - 2) for _ in range(2))
    angle = 0.0 if factors.shape == "circle" else rng.uniform(-MAX_TURN, MAX_TURN)
    image = _background(factors.background, rng, size)
    # The shape is drawn supersampled inside its bounding box only, then averaged down.
    x0, y0 = max(0, int(cx - 1.25 * r)), max(0, int(cy - 1.25 * r))
    x1, y1 = min(size, int(np.ceil(cx + 1.25 * r))), min(size, int(np.ceil(cy + 1.25 * r)))
    w, h, s = x1 - x0, y1 - y0, SUPERSAMPLE
    mask_image = Image.new("L", (w * s, h * s), 0)
    outline = _outline(factors.shape, cx - x0, cy - y0, r, angle)
    ImageDraw.Draw(mask_image).polygon([(x * s, y * s) for x, y in outline], fill=255)
    big_mask = np.asarray(mask_image, dtype=np.float32) / np.float32(255)
    ys, xs = np.mgrid[0 : h * s, 0 : w * s].astype(np.float32) / np.float32(s)
    shade = _pattern(factors.texture, rng, xs + x0, ys + y0, rng.uniform(0, np.pi))
    colour = (np.array(COLOURS[factors.colour]) + rng.normal(0, 8, 3)).astype(np.float32)
    # Per pixel: the share of its 4x4 samples inside the shape, and the shape's mean colour there.
    inside = big_mask.reshape(h, s, w, s).sum(axis=(1, 3))
    dark = (big_mask * shade).reshape(h, s, w, s).sum(axis=(1, 3))
    coverage = (inside / s**2)[..., None]
    dark_share = (dark / np.maximum(inside, 1e-6))[..., None]
    shape_rgb = colour * (1 - SHADE * dark_share)
    box = image[y0:y1, x0:x1]
    image[y0:y1, x0:x1] = shape_rgb * coverage + box * (1 - coverage)
    image += rng.normal(0, 5, image.shape).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


# --- Captions --------------------------------------------------------------------------------

_TEXTURE_WORDS = {  # adjective forms, and "with ..." forms
    "plain": (("plain", "solid", "plain-filled"), ("with a plain fill", "with no pattern")),
    "stripes": (("striped", "stripy"), ("with stripes", "with a striped pattern")),
    "dots": (("dotted", "spotted", "polka-dot"), ("with dots", "with a dotted pattern")),
}
_BACKGROUND_WORDS = {  # "on ..." forms, and adjectives before "background"
    "sand": (("on sand", "on a sandy beach", "lying on sand"), ("sandy", "sand")),
    "grass": (("on grass", "on a lawn", "in the grass"), ("grassy", "grass")),
    "night sky": (("against a night sky", "under a dark night sky"), ("night-sky", "dark night sky")),
    "water": (("on water", "floating on water", "over rippling water"), ("water", "watery")),
}
_TEMPLATES = (
    "a {colour} {shape} {texture_with} {on}",
    "{texture} {colour} {shape}, {bg} background",
    "a photo of a {texture} {colour} {shape} {on}",
    "{on_cap}: a {colour} {shape} {texture_with}",
    "a {texture} {shape} in {colour} {on}",
    "{colour} {shape}, {texture}, {bg} background",
)


def caption(factors: Factors, rng: np.random.Generator) -> str:
    """A caption that names all four factors, in one of several wordings."""

    def pick(options: Sequence[str]) -> str:
        return options[int(rng.integers(len(options)))]

    texture_adjectives, texture_withs = _TEXTURE_WORDS[factors.texture]
    ons, bgs = _BACKGROUND_WORDS[factors.background]
    on = pick(ons)
    return pick(_TEMPLATES).format(
        colour=factors.colour,
        shape=factors.shape,
        texture=pick(texture_adjectives),
        texture_with=pick(texture_withs),
        on=on,
        on_cap=on[0].upper() + on[1:],
        bg=pick(bgs),
    )


# --- Collections -----------------------------------------------------------------------------


@dataclass
class Collection:
    """Generated images in memory: pixels (n, size, size, 3) uint8, factors and captions."""

    pixels: np.ndarray
    factors: list[Factors]
    captions: list[str]

    @property
    def labels(self) -> np.ndarray:
        return np.array([f.label for f in self.factors], dtype=np.int64)


def generate(n: int, seed: int | Sequence[int], size: int = 64) -> Collection:
    """`n` images with balanced factors; the same `seed` gives the same images and captions."""
    rng = np.random.default_rng(seed)
    factors = balanced_factors(n, rng)
    pixels = np.stack([draw(f, rng, size) for f in factors]) if n else np.zeros((0, size, size, 3), np.uint8)
    captions = [caption(f, rng) for f in factors]
    return Collection(pixels, factors, captions)


def image_name(index: int, factors: Factors) -> str:
    words = (factors.colour, factors.shape, factors.texture, factors.background.replace(" ", "-"))
    return f"{index:05d}-{'-'.join(words)}.png"


def write_folder(collection: Collection, folder: Path) -> Path:
    """PNG images and metadata.csv (file_name, caption, label and the four factors): an
    imagefolder that `neuron-atlas run` takes with its captions and class labels."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (pixels, factors, text) in enumerate(
        zip(collection.pixels, collection.factors, collection.captions, strict=True)
    ):
        name = image_name(i, factors)
        Image.fromarray(pixels).save(folder / name)
        rows.append([name, text, factors.label, *(factors.value(f) for f in FACTORS)])
    with (folder / "metadata.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "caption", "label", *FACTORS])
        writer.writerows(rows)
    return folder


def read_factors(folder: Path) -> dict[str, Factors]:
    """`file_name -> Factors` from a folder written by `write_folder`."""
    with (folder / "metadata.csv").open(newline="") as handle:
        return {row["file_name"]: Factors(*(row[f] for f in FACTORS)) for row in csv.DictReader(handle)}


def cluster_purity(clusters: Sequence[Sequence[str]], factors: dict[str, Factors]) -> dict[str, float]:
    """How far clusters of images (each a list of file names) follow the factors. Per factor:
    the share of images that carry their cluster's most common value of it (1.0: every cluster
    pure in that factor). `best`: the same with each cluster's purest factor (1.0: every
    cluster pure in at least one factor). Clusters of one image count as pure; leave them out
    to ask more."""
    total = sum(len(c) for c in clusters)
    majority = {f: 0 for f in FACTORS}
    best = 0
    for members in clusters:
        counts = {f: Counter(factors[m].value(f) for m in members).most_common(1)[0][1] for f in FACTORS}
        for f in FACTORS:
            majority[f] += counts[f]
        best += max(counts.values())
    return {**{f: majority[f] / total for f in FACTORS}, "best": best / total}


def shuffled_purity(
    clusters: Sequence[Sequence[str]], factors: dict[str, Factors], draws: int = 200, seed: int = 0
) -> dict[str, float]:
    """`cluster_purity` of the same images dealt at random into clusters of the same sizes,
    averaged over `draws`: the purity that cluster sizes alone give (small clusters are often
    pure by chance)."""
    rng = np.random.default_rng(seed)
    names = [name for members in clusters for name in members]
    ends = np.cumsum([len(members) for members in clusters])[:-1]
    totals = dict.fromkeys((*FACTORS, "best"), 0.0)
    for _ in range(draws):
        dealt = np.split(np.array(names)[rng.permutation(len(names))], ends)
        for key, value in cluster_purity([list(c) for c in dealt], factors).items():
            totals[key] += value / draws
    return totals


def level_clusters(hierarchy: dict[str, Any], level: int = 1) -> list[list[str]]:
    """The clusters of one level of a hierarchy.json, each as its images' file names."""
    names = {image["id"]: image["file_name"] for image in hierarchy["images"]}
    return [[names[i] for i in c["images"]] for c in hierarchy["clusters"] if c["level"] == level]


# --- The trained model -----------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the trained model; its `key` names the cache entry."""

    seed: int = 0
    size: int = 64
    train_images: int = 4800
    heldout_images: int = 960
    steps: int = 700
    batch_size: int = 16
    learning_rate: float = 1e-3
    architecture: str = "resnet18"
    threads: int = 2  # the result depends on the thread count (the order of float sums)

    def key(self) -> str:
        """A hash of this config, of this module's source (the drawing and training code) and
        of the torch version: a cached model is reused only when all three match."""
        text = json.dumps(asdict(self), sort_keys=True) + Path(__file__).read_text() + torch.__version__
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class FactorModel:
    """A model trained on factor-world images, and the held-out images it was scored on."""

    weights: Path  # safetensors state dict
    architecture: str
    preprocessing: Preprocessing
    class_names: tuple[str, ...]
    images: Path  # the held-out images, with metadata.csv (file_name, caption, label, factors)
    factors: dict[str, Factors]  # file_name -> its factors, in the folder's order
    heldout_accuracy: float
    training_seconds: float  # wall time, data generation and writing included
    config: TrainConfig

    def preprocessing_json(self) -> str:
        """The `--preprocessing` argument of `neuron-atlas run` for this model."""
        return self.preprocessing.model_dump_json()

    def load(self) -> LoadedModel:
        """The model through the product's loader, as `neuron-atlas run --weights` loads it."""
        return load_target_model(self.architecture, str(self.weights), preprocessing=self.preprocessing)


def trained_factor_model(folder: Path, seed: int = 0, **config: Any) -> FactorModel:
    """The model for `TrainConfig(seed=seed, **config)`: reused from `folder` when a model with the
    same key is there, else trained (see the module's docstring for the time) and kept in
    `folder/factor-<key>`.

    Training runs in a child process with OpenMP told to sleep, not spin, while it waits
    (OMP_WAIT_POLICY=PASSIVE): on a busy machine spinning threads made 2-thread training 5x
    slower. The child also keeps the thread count and the random state of the caller as they
    were."""
    settings = TrainConfig(seed=seed, **config)
    entry = folder / f"factor-{settings.key()}"
    if not (entry / "model.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=folder))
        try:
            _train_in_child(settings, partial)
            if not entry.exists():  # else another process finished the same model first
                os.replace(partial, entry)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return read_factor_model(entry)


def _train_in_child(config: TrainConfig, out: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(config.threads),
        "OMP_WAIT_POLICY": "PASSIVE",
        "PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p),
    }
    command = [sys.executable, "-m", "benchmarks.factor_world", "--train-into", str(out)]
    command += ["--config", json.dumps(asdict(config))]
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    if done.returncode != 0 or not (out / "model.json").is_file():
        raise RuntimeError(f"Training the factor-world model failed:\n{done.stderr[-4000:]}")


def read_factor_model(entry: Path) -> FactorModel:
    """A model written by `train_factor_model`, from its model.json."""
    record = json.loads((entry / "model.json").read_text())
    return FactorModel(
        weights=entry / "model.safetensors",
        architecture=record["architecture"],
        preprocessing=Preprocessing.model_validate(record["preprocessing"]),
        class_names=tuple(record["class_names"]),
        images=entry / "images",
        factors=read_factors(entry / "images"),
        heldout_accuracy=record["heldout_accuracy"],
        training_seconds=record["seconds"]["total"],
        config=TrainConfig(**record["config"]),
    )


def train_factor_model(config: TrainConfig, out: Path) -> FactorModel:
    """Generate the images, train the model from random init on `config.threads` CPU threads,
    score it on the held-out images; write out/model.safetensors, out/images/ and, last,
    out/model.json (architecture, preprocessing, class names, seed, accuracy, seconds)."""
    start, cpu_start = time.perf_counter(), time.process_time()
    train = generate(config.train_images, (config.seed, 0), config.size)
    heldout = generate(config.heldout_images, (config.seed, 1), config.size)
    generated = time.perf_counter()
    write_folder(heldout, out / "images")
    written = time.perf_counter()
    prep = Preprocessing(
        input_size=config.size,
        resize=config.size,  # the images are already this size: the transform only normalises
        mean=_round3(train.pixels.reshape(-1, 3).mean(axis=0) / 255),
        std=_round3(train.pixels.reshape(-1, 3).std(axis=0) / 255),
    )
    with _training_threads(config.threads):
        module = _train(config, train, prep)
        trained = time.perf_counter()
        predicted = _predict(module, heldout.pixels, prep)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(out / "model.safetensors"))
    end = time.perf_counter()
    seconds = {
        "generate": generated - start,
        "write_images": written - generated,
        "train": trained - written,
        "evaluate_and_save": end - trained,
        "total": end - start,
        # CPU time of all threads: on a machine shared with other work, wall time overstates
        # what the run needs, and cpu / threads is about the wall time on idle cores.
        "cpu": time.process_time() - cpu_start,
    }
    record = {
        "architecture": config.architecture,
        "preprocessing": prep.model_dump(mode="json"),
        "class_names": list(CLASS_NAMES),
        "factors": {
            "shape": SHAPES,
            "colour": list(COLOURS),
            "texture": TEXTURES,
            "background": list(BACKGROUNDS),
        },
        "seed": config.seed,
        "heldout_accuracy": float((predicted == heldout.labels).mean()),
        "heldout_scores": heldout_scores(predicted, heldout.factors),
        "heldout_images": config.heldout_images,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "config": asdict(config),
        "key": config.key(),
        "torch": torch.__version__,
    }
    (out / "model.json").write_text(json.dumps(record, indent=2) + "\n")
    return read_factor_model(out)


def heldout_scores(predicted: np.ndarray, factors: Sequence[Factors]) -> dict[str, Any]:
    """Top-1 accuracy by the value of each factor, and how often the predicted class has the
    right shape and the right colour."""
    labels = np.array([f.label for f in factors])
    correct = predicted == labels
    by_factor = {
        factor: {
            value: round(float(correct[[f.value(factor) == value for f in factors]].mean()), 4)
            for value in sorted({f.value(factor) for f in factors})
        }
        for factor in FACTORS
    }
    return {
        "shape_right": round(float((predicted // len(COLOURS) == labels // len(COLOURS)).mean()), 4),
        "colour_right": round(float((predicted % len(COLOURS) == labels % len(COLOURS)).mean()), 4),
        "accuracy_by_factor": by_factor,
    }


def _round3(values: np.ndarray) -> tuple[float, float, float]:
    a, b, c = (round(float(v), 3) for v in values)
    return a, b, c


@contextmanager
def _training_threads(threads: int) -> Iterator[None]:
    """Fixed intra-op threads and a private torch RNG, both restored after: a test session that
    trains in-process keeps its own settings."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.set_num_threads(before)


def _train(config: TrainConfig, train: Collection, prep: Preprocessing) -> nn.Module:
    module = build_architecture(config.architecture, config.seed, num_classes=len(CLASS_NAMES))
    module.train()
    # fused: one kernel for all parameters, a quarter of the CPU time of the per-tensor update
    optimiser = torch.optim.AdamW(module.parameters(), lr=config.learning_rate, weight_decay=1e-4, fused=True)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=config.learning_rate, total_steps=config.steps, pct_start=0.2
    )
    generator = torch.Generator().manual_seed(config.seed)
    labels = torch.from_numpy(train.labels)
    for batch in _batches(len(labels), config.batch_size, config.steps, generator):
        inputs = normalise(train.pixels[batch.numpy()], prep)
        loss = F.cross_entropy(module(inputs), labels[batch])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
    return module.eval()


def _batches(n: int, batch_size: int, steps: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """`steps` batches of indices, epoch after epoch, each epoch in a new seeded order."""
    done = 0
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            if done == steps:
                return
            yield order[start : start + batch_size]
            done += 1


@torch.inference_mode()
def _predict(module: nn.Module, pixels: np.ndarray, prep: Preprocessing) -> np.ndarray:
    return np.concatenate(
        [module(normalise(pixels[i : i + 256], prep)).argmax(1).numpy() for i in range(0, len(pixels), 256)]
    )


# --- Edited checkpoints ----------------------------------------------------------------------


def edited_checkpoint(
    weights: Path, out: Path, zero_channels: dict[str, list[int]], architecture: str = "resnet18"
) -> Path:
    """A copy of the checkpoint `weights` at `out` in which the named conv layers' output
    channels are silent: the conv's filters (and bias) for those channels are zeroed, and so are
    the weight and bias of the BatchNorm that normalises that conv's output, so the channel is
    exactly 0 after the conv+BatchNorm pair whatever the BatchNorm's running statistics.

    A residual block adds its input back after its last BatchNorm: to silence a channel of a
    ResNet stage's output (what `neuron-atlas run` reads by default) zero it in every conv that
    writes to that stage's residual stream, e.g. for resnet18's layer4: `layer4.0.conv2`,
    `layer4.0.downsample.0` and `layer4.1.conv2`."""
    state = read_state_dict(weights)
    loaded = load_target_model(architecture, str(weights))
    module = loaded.module
    modules = dict(module.named_modules())
    norms = _norm_after_conv(module, loaded.preprocessing.input_size)
    for name, channels in zero_channels.items():
        conv = modules.get(name)
        if not isinstance(conv, nn.Conv2d):
            convs = [n for n, m in module.named_modules() if isinstance(m, nn.Conv2d)]
            raise ValueError(f"{name!r} is not a Conv2d of {architecture}; its convs: {', '.join(convs)}.")
        if any(not 0 <= c < conv.out_channels for c in channels):
            raise ValueError(f"{name} has {conv.out_channels} output channels; got {sorted(channels)}.")
        index = torch.tensor(sorted(set(channels)), dtype=torch.long)
        targets = [f"{name}.weight", f"{name}.bias"]
        if name in norms:
            targets += [f"{norms[name]}.weight", f"{norms[name]}.bias"]
        for key in targets:
            if key in state:
                state[key] = state[key].clone()
                state[key][index] = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out))
    return out


@torch.inference_mode()
def _norm_after_conv(module: nn.Module, input_size: int) -> dict[str, str]:
    """conv name -> the BatchNorm that takes that conv's output as its input, from one pass."""
    outputs: dict[str, torch.Tensor] = {}
    found: dict[str, str] = {}

    def keep_output(name: str) -> Any:
        def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            outputs[name] = output  # kept alive, so `is` below compares the very tensors

        return hook

    def match_input(name: str) -> Any:
        def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            for conv, output in outputs.items():
                if inputs[0] is output:
                    found.setdefault(conv, name)

        return hook

    handles = []
    for name, child in module.named_modules():
        if isinstance(child, nn.Conv2d):
            handles.append(child.register_forward_hook(keep_output(name)))
        elif isinstance(child, nn.modules.batchnorm._BatchNorm):
            handles.append(child.register_forward_pre_hook(match_input(name)))
    try:
        module(torch.zeros(1, 3, input_size, input_size))
    finally:
        for handle in handles:
            handle.remove()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description="Train (or reuse) the factor-world model; print its record.")
    parser.add_argument("--out", type=Path, help="cache folder (the model goes to factor-<key>/ in it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=TrainConfig.threads)
    parser.add_argument("--train-into", type=Path, help=argparse.SUPPRESS)  # trained_factor_model's child
    parser.add_argument("--config", type=json.loads, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train_into:
        train_factor_model(TrainConfig(**args.config), args.train_into)
        return
    if args.out is None:
        parser.error("--out is required")
    model = trained_factor_model(args.out, seed=args.seed, threads=args.threads)
    sys.stdout.write((model.weights.parent / "model.json").read_text())


if __name__ == "__main__":  # python -m benchmarks.factor_world --out DIR
    main()
