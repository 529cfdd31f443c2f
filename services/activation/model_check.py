"""Check a model before it is registered: the weights fit the architecture (compared on the meta
device before anything is allocated), load strictly, and the model survives a forward pass on
one sample image. Run by an activation worker (it has torch and the model zoos) while the
gateway waits, so a bad model is refused at upload, not in a job an hour later."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from neuron_atlas_client.contracts.models import Preprocessing
from neuron_atlas_client.errors import InputError, NeuronAtlasError
from neuron_core.hooks import preprocess
from neuron_core.model_layers import describe_layers
from neuron_core.target_model import load_target_model, num_outputs
from neuron_core.weights_check import WeightsMismatch, describe_mismatch
from shared.public_text import redact


class ForwardPassFailed(InputError):
    kind = "model-forward-failed"


def check_model(
    weights: Path,
    architecture: str,
    num_classes: int | None,
    preprocessing: Preprocessing | None,
    max_parameters: int | None = None,
    file_name: str = "model.safetensors",
) -> dict[str, Any]:
    """What the registry records about a model that loads and runs; raises a NeuronAtlasError
    that says what is wrong otherwise. Messages name the file `file_name`, never its path."""
    target = load_target_model(
        architecture,
        str(weights),
        num_classes=num_classes,
        preprocessing=preprocessing,
        max_parameters=max_parameters,
        file_name=file_name,
    )
    prep = target.preprocessing
    sample = Image.fromarray(
        np.random.default_rng(0).integers(0, 256, (prep.resize, prep.resize, 3), np.uint8)
    )
    try:
        with torch.inference_mode():
            output = target.module(preprocess([sample], prep))
    except Exception as exc:  # any failure of the user's model is the user's to fix
        raise ForwardPassFailed(
            f"The model fails a forward pass on one {prep.input_size}x{prep.input_size} image "
            f"({type(exc).__name__}: {str(exc)[:300]}).",
            "Check the architecture, num_classes and the preprocessing's input_size.",
        ) from None
    if isinstance(output, torch.Tensor) and not bool(torch.isfinite(output).all()):
        raise ForwardPassFailed(
            "The model's output on a sample image is not finite (NaN or infinity).",
            "Check the weights: a diverged checkpoint cannot be explained.",
        )
    return {
        "architecture": target.architecture,
        "num_classes": num_outputs(target.module) or num_classes or 1,
        "preprocessing": prep.document(),
        "parameters": sum(p.numel() for p in target.module.parameters()),
        "layers": describe_layers(target.architecture, target.module, prep.input_size).document(),
        "warnings": list(target.warnings),
    }


def problem_of(exc: NeuronAtlasError) -> dict[str, Any]:
    """The refusal, as data the gateway turns into a problem+json answer; its text redacted of
    any path, host or address, since it goes to the caller."""
    problem: dict[str, Any] = {"kind": exc.kind, "problem": redact(exc.problem), "fix": redact(exc.fix)}
    if isinstance(exc, WeightsMismatch):
        problem.update(describe_mismatch(exc))
    return problem
