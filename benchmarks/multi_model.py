"""One job of two target models against two separate jobs, measured in the same run (issue 27,
'Speed': a two-model job costs at most the caption-and-cluster work once plus each model's
activation and uncertainty work).

    python benchmarks/multi_model.py --images 96 --device cpu          # the run in docs/performance.md
    python benchmarks/multi_model.py --images 2048 --captions provided --uncertainty statistics

It generates N JPEGs (benchmarks/pipeline.py's scenes, 640x480) and runs the embedded pipeline
(`neuron_atlas.pipeline.run`) three times on them: model A alone, model B alone, and one job of
both (`options.models`), each with an observer that books wall and process CPU seconds per stage.
The models (captioner, embedder, both targets) are loaded once, before any timing, and shared by
the three runs, so the comparison is of the work, not of loading.

- Captions: with `--captions model` (the default) a BLIP-base-shaped model with random weights
  captions every image (30 tokens each, as benchmarks/pipeline.py does; the text that goes on is
  the scene's caption, so FINCH has concepts to find); `provided`: a metadata.csv gives them.
- Targets: `--models A,B` (default resnet18,resnet34), random weights (speed does not depend on
  the values).
- The bound checked: the multi-model job's stages that run once (ingest, decode, caption,
  embed_cluster, labelling) against the single job A's, and its per-model stages (activation,
  groups, uncertainty, assemble) against A's plus B's; the comparison stage is the multi-model
  job's own extra work, reported beside them.
- CPU seconds beside wall seconds: on cores shared with other work, wall time moves with their
  load; the process's CPU time much less.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NEURON_ATLAS_OFFLINE", "1")

import torch

from benchmarks.pipeline import (
    NO_MODEL_PASSES,
    RandomEmbedder,
    generate_images,
    make_captioner,
    make_embedder,
    scene_caption,
)

ONCE = ("ingest", "decode", "caption", "embed_cluster", "labelling")
PER_MODEL = ("activation", "groups", "uncertainty", "assemble")


class StageClock:
    """Wall and process-CPU seconds per stage name, summed over its calls."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start, cpu_start = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - start
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - cpu_start

    def total(self, names: tuple[str, ...], cpu: bool = False) -> float:
        seconds = self.cpu if cpu else self.wall
        return sum(seconds.get(name, 0.0) for name in names)


def run_job(image_dir: Path, out_dir: Path, options: Any, models: Any, clock: StageClock) -> None:
    """One embedded run, every stage's entry timed; captions rewritten to the scene's after each
    caption shard (BLIP with random weights says one thing of every image)."""
    from neuron_atlas import pipeline
    from services.labelling.settings import LabelSettings
    from shared.storage import artifacts
    from shared.storage.stores import LocalStore, get_json, put_json

    store = LocalStore(out_dir)

    @contextmanager
    def observe(stage: str, shard: int | None) -> Iterator[None]:
        with clock.stage(stage):
            yield
        if stage == "caption" and models.captioner is not None and shard is not None:
            manifest = get_json(store, artifacts.MANIFEST)
            names = {
                e["id"]: e["file_name"] for e in artifacts.shard_entries(manifest, shard, options.shard_size)
            }
            document = get_json(store, artifacts.captions_key(shard))
            for row in document["captions"]:
                row["caption"] = scene_caption(names[row["image_id"]])
            put_json(store, artifacts.captions_key(shard), document)

    pipeline.run(
        image_dir,
        out_dir,
        options,
        version="bench",
        label_settings=LabelSettings(offline=True),
        models=models,
        observe=observe,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default="resnet18,resnet34", help="the two target architectures")
    parser.add_argument("--captions", choices=["model", "provided"], default="model")
    parser.add_argument(
        "--uncertainty",
        choices=["defaults", "statistics"],
        default="defaults",
        help="defaults: the uncertainty stage as a default run has it; statistics: no model passes",
    )
    parser.add_argument("--caption-batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="image generation")
    parser.add_argument("--json", type=Path, default=Path("multi_model.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from neuron_atlas import pipeline
    from neuron_atlas_client.options import PipelineOptions, TargetModel
    from neuron_core.target_model import TargetSpec, target_model

    device = torch.device(args.device)
    first, second = args.models.split(",")
    common: dict[str, Any] = {
        "caption_model": "blip-base-shaped-random",
        "caption_batch_size": args.caption_batch,
        "allow_random_weights": True,
        "device": str(device),
        **(NO_MODEL_PASSES if args.uncertainty == "statistics" else {}),
    }
    alone = {key: PipelineOptions(**common, model=key) for key in (first, second)}
    both = PipelineOptions(**common, models=[TargetModel(model=first), TargetModel(model=second)])
    targets = {key: target_model(TargetSpec.of(options)) for key, options in alone.items()}
    captioner = None
    if args.captions == "model":
        captioner = make_captioner(device, 30, autocast=device.type == "cuda")
        captioner.load()
    found, embedder_note = make_embedder(None, device, autocast=device.type == "cuda")
    embedder: Any = found or RandomEmbedder()  # pipeline.Models wants an Embedder: duck-typed

    runs: dict[str, StageClock] = {}
    with tempfile.TemporaryDirectory() as tmp:
        image_dir = Path(tmp) / "images"
        image_dir.mkdir()
        generate_images(image_dir, args.images, args.workers, captions=args.captions == "provided")
        plan = [
            (first, alone[first], pipeline.Models(targets[first], captioner, embedder)),
            (second, alone[second], pipeline.Models(targets[second], captioner, embedder)),
            ("both", both, pipeline.Models(targets[first], captioner, embedder, dict(targets))),
        ]
        for name, options, models in plan:
            runs[name] = StageClock()
            start, cpu_start = time.perf_counter(), time.process_time()
            run_job(image_dir, Path(tmp) / name, options, models, runs[name])
            runs[name].wall["total"] = time.perf_counter() - start
            runs[name].cpu["total"] = time.process_time() - cpu_start
            print(
                f"{name}: {runs[name].wall['total']:.1f} s wall, {runs[name].cpu['total']:.1f} s CPU",
                flush=True,
            )

    a, b, m = runs[first], runs[second], runs["both"]
    result: dict[str, Any] = {
        "images": args.images,
        "models": [first, second],
        "captions": args.captions,
        "uncertainty": args.uncertainty,
        "device": str(device),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "embedder": embedder_note,
        "runs": {name: {"wall_s": _rounded(c.wall), "cpu_s": _rounded(c.cpu)} for name, c in runs.items()},
    }
    for kind, cpu in (("wall", False), ("cpu", True)):
        separate = a.total(("total",), cpu) + b.total(("total",), cpu)
        bound = a.total(ONCE, cpu) + a.total(PER_MODEL, cpu) + b.total(PER_MODEL, cpu)
        result[kind] = {
            "two_separate_jobs_s": round(separate, 2),
            "one_job_of_both_s": round(m.total(("total",), cpu), 2),
            "ratio_to_separate": round(m.total(("total",), cpu) / separate, 3),
            "bound_s": round(bound, 2),  # A's once-stages + A's and B's per-model stages
            "once_stages_s": round(m.total(ONCE, cpu), 2),
            "once_stages_of_a_s": round(a.total(ONCE, cpu), 2),
            "per_model_stages_s": round(m.total(PER_MODEL, cpu), 2),
            "per_model_stages_of_a_and_b_s": round(a.total(PER_MODEL, cpu) + b.total(PER_MODEL, cpu), 2),
            "compare_stage_s": round(m.total(("compare",), cpu), 2),
        }
    args.json.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("wall", "cpu")}, indent=1))
    print(f"wrote {args.json}")


def _rounded(seconds: dict[str, float]) -> dict[str, float]:
    return {name: round(value, 2) for name, value in seconds.items()}


if __name__ == "__main__":
    main()
