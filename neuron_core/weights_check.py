"""Does a safetensors file fit an architecture? Decided from the file's header and the
architecture built on PyTorch's meta device, before a single weight is allocated or read.

A registry check used to build the whole model and load the file before comparing keys: a
148-byte file declared as a ViT-H took a worker from 1.6 GB to 3.8 GB before it was refused. On
the meta device a module has its parameters' shapes and dtypes and no storage, so the keys,
shapes, dtypes and parameter count are all compared for a few megabytes, whatever the model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from neuron_atlas_client.errors import InputError, ModelLoadError
from neuron_core.architectures import Architecture, classifier_weight_key
from shared.models.safetensors_file import FLOAT_DTYPES, SafetensorsSummary

Shape = tuple[int, ...]


class WeightsMismatch(ModelLoadError):
    """A state dict that does not load strictly into the architecture; lists what differs."""

    kind = "weights-mismatch"

    def __init__(
        self,
        problem: str,
        fix: str,
        missing: list[str],
        unexpected: list[str],
        mismatched: list[tuple[str, Shape, Shape]],
    ) -> None:
        super().__init__(problem, fix)
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched


class QuantisedWeights(InputError):
    """Integer tensors where the model has floating-point ones: a quantised checkpoint whose
    scales and zero points are not in a plain state dict, so casting would give nonsense."""

    kind = "quantised-weights"


class ModelTooLarge(InputError):
    kind = "model-too-large"


@dataclass(frozen=True)
class Fit:
    """What the check found: the head's size to build with, and what loading will change."""

    num_classes: int | None
    parameters: int
    warnings: tuple[str, ...] = ()


def build_on_meta(arch: Architecture, num_classes: int | None) -> nn.Module:
    """The architecture with shapes and no storage: costs what its Python objects cost."""
    with torch.device("meta"):
        return arch.build(num_classes)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def compare_shapes(expected: Mapping[str, Shape], found: Mapping[str, Shape], architecture: str) -> None:
    """Raise WeightsMismatch naming the missing, unexpected and mismatched keys, if any."""
    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    mismatched = [
        (key, tuple(shape), tuple(found[key]))
        for key, shape in expected.items()  # in the model's order, which a reader follows
        if key in found and tuple(found[key]) != tuple(shape)
    ]
    if not (missing or unexpected or mismatched):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({', '.join(missing[:5])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({', '.join(unexpected[:5])})")
    if mismatched:
        shown = ", ".join(f"{k}: model {list(e)}, file {list(g)}" for k, e, g in mismatched[:5])
        parts.append(f"{len(mismatched)} of another shape ({shown})")
    raise WeightsMismatch(
        f"The state dict does not fit {architecture}: {'; '.join(parts)}.",
        f"Save the state dict of the very {architecture} you trained "
        "(`save_file(model.state_dict(), path)`, without a `module.` prefix from DataParallel), "
        "or name its real architecture (--model, or `architecture` for the API); give num_classes "
        "if the head was resized.",
        missing,
        unexpected,
        mismatched,
    )


def shapes_of(module: nn.Module) -> dict[str, Shape]:
    return {key: tuple(tensor.shape) for key, tensor in module.state_dict().items()}


def head_size_in(module: nn.Module, shapes: Mapping[str, Shape]) -> int | None:
    """The classifier's output count in a checkpoint, where it differs from `module`'s head."""
    key = classifier_weight_key(module)
    if key is None or key not in shapes or not shapes[key]:
        return None
    size, own = int(shapes[key][0]), shapes_of(module).get(key)
    return None if own is not None and own[:1] == (size,) else size


def dtype_warnings(module: nn.Module, dtypes: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Refuse integer tensors for floating-point parameters; say which tensors loading casts."""
    floating = {key for key, tensor in module.state_dict().items() if tensor.is_floating_point()}
    integer = sorted(key for key in floating if dtypes.get(key, "F32") not in FLOAT_DTYPES)
    if integer:
        shown = ", ".join(f"{key} ({dtypes[key]})" for key in integer[:5])
        raise QuantisedWeights(
            f"{name} stores {len(integer)} floating-point parameters as integers ({shown}): a "
            "quantised checkpoint, whose scales are not in a plain state dict.",
            "Save the float state dict of the model (before quantisation, or dequantised: "
            "`{k: v.dequantize() if v.is_quantized else v.float() for k, v in state.items()}`).",
        )
    wide = sorted(key for key in floating if dtypes.get(key) == "F64")
    if wide:
        return (f"{len(wide)} float64 tensors ({', '.join(wide[:3])}) were cast to float32.",)
    return ()


def check_fits(
    arch: Architecture,
    summary: SafetensorsSummary,
    num_classes: int | None,
    name: str,
    max_parameters: int | None = None,
) -> Fit:
    """Compare the file's header with the architecture on the meta device; raise what is wrong
    (too many parameters, keys or shapes that differ, integer weights) before any allocation."""
    module = build_on_meta(arch, num_classes)
    if num_classes is None and (size := head_size_in(module, summary.shapes)) is not None:
        module, num_classes = build_on_meta(arch, size), size  # a fine-tuned head, read off the file
    parameters = parameter_count(module)
    if max_parameters is not None and parameters > max_parameters:
        raise ModelTooLarge(
            f"{arch} has {parameters:,} parameters; this deployment checks models of at most "
            f"{max_parameters:,}.",
            "Register a smaller model, or ask the operator to raise GATEWAY_MAX_MODEL_PARAMETERS.",
        )
    compare_shapes(shapes_of(module), summary.shapes, str(arch))
    return Fit(num_classes, parameters, dtype_warnings(module, summary.dtypes, name))


def describe_mismatch(exc: WeightsMismatch, limit: int = 50) -> dict[str, Sequence[object]]:
    """The keys that differ, as data for an API answer."""
    return {
        "missing_keys": exc.missing[:limit],
        "unexpected_keys": exc.unexpected[:limit],
        "shape_mismatches": [
            {"key": key, "model": list(model), "file": list(file)}
            for key, model, file in exc.mismatched[:limit]
        ],
    }
