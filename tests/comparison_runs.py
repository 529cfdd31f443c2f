"""Finished results to compare (issue 27): the sample collection run through the embedded
pipeline with the planted ResNet18 (tests.tiny_models: conv1 channels 0-2 detect the sand
background) and with changed copies of it, each differing in one known place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.tiny_models import planted_colour_detectors, save_planted_resnet18

SAND = sorted(planted_colour_detectors("sand"))  # conv1 channels 0, 1, 2
MOVED_TO = [40, 41, 42]  # where the moved copy puts them (no group holds these in the original)
PER_CONCEPT = 12  # level-2 concepts of 12 images: a detector lost on all of them is testable


@dataclass(frozen=True)
class PlantedRuns:
    sample: Path
    original: Path  # the planted model
    moved: Path  # the sand detectors swapped with channels 40-42
    zeroed: Path  # the sand detectors' weights zeroed
    more_layers: Path  # the planted model read at conv1 and layer1 (other layers: no neuron identity)


def _options(weights: Path, **changes: object) -> object:
    from neuron_atlas_client.contracts.models import Preprocessing
    from neuron_atlas_client.options import PipelineOptions

    settings: dict[str, object] = {
        "weights": str(weights),
        "layers": ("conv1",),  # the detectors' layer: a change there moves every later layer too
        "device": "cpu",
        # the detectors read colour, at any size: 64 px passes keep four runs short
        "preprocessing": Preprocessing(input_size=64, resize=64),
        "bootstrap_resamples": 20,
        "mc_samples": 0,
        "tta_samples": 0,
        "ablation_random_sets": 0,
        "pruning_random_sets": 1,
        "pruning_thresholds": (0.05,),
    }
    return PipelineOptions(**(settings | changes))


def _changed_copy(original: Path, path: Path, how: str) -> Path:
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(str(original))
    weight = state["conv1.weight"].clone()
    if how == "moved":
        weight[SAND], weight[MOVED_TO] = state["conv1.weight"][MOVED_TO], state["conv1.weight"][SAND]
    else:
        weight[SAND] = torch.zeros_like(weight[SAND])
    save_file({**state, "conv1.weight": weight.contiguous()}, str(path))
    return path


def make_planted_runs(root: Path) -> PlantedRuns:
    from neuron_atlas.pipeline import run
    from neuron_atlas.sample import make_sample

    sample = make_sample(root / "images", per_concept=PER_CONCEPT, size=64)
    original = save_planted_resnet18(root / "original.safetensors")
    outs = {}
    for name, weights, changes in (
        ("original", original, {}),
        ("moved", _changed_copy(original, root / "moved.safetensors", "moved"), {}),
        ("zeroed", _changed_copy(original, root / "zeroed.safetensors", "zeroed"), {}),
        ("more_layers", original, {"layers": ("conv1", "layer1"), "uncertainty_budget": 0}),
    ):
        outs[name] = root / name
        run(sample, outs[name], _options(weights, **changes))  # type: ignore[arg-type]
    return PlantedRuns(sample, **outs)
