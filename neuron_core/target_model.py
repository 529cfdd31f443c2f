"""Load the target model: a torchvision classification architecture and its weights.

Weights come from, in order: a user's safetensors state dict (never a pickle from a user), the
ImageNet weights in the torch cache (downloaded only when downloads are allowed), or random
weights, and random only when the caller explicitly allows it.

`target_model(TargetSpec.of(options, ...))` is the one way a stage gets a target model: one
bounded cache per process, keyed by everything that changes the loaded module.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
import torchvision.models as tvm
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from shared.devices import resolve_device
from shared.errors import InputError, ModelLoadError
from shared.hub import downloads_allowed
from shared.options import PipelineOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """A target model in eval mode plus a plain-words record of where its weights came from."""

    architecture: str
    module: nn.Module
    weights: str

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device


def classification_architectures() -> list[str]:
    return sorted(tvm.list_models(module=tvm))


def torch_cache_dir() -> Path:
    """Where torchvision keeps downloaded checkpoints (`$TORCH_HOME/hub/checkpoints`)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def build_architecture(architecture: str, seed: int = 0) -> nn.Module:
    names = classification_architectures()
    if architecture not in names:
        close = [n for n in names if n.startswith(architecture[:4])] or names[:12]
        raise InputError(
            f"Unknown model {architecture!r}.",
            f"Choose a torchvision classification architecture, e.g. {', '.join(close)}.",
        )
    torch.manual_seed(seed)  # random weights, where used, repeat exactly
    return tvm.get_model(architecture, weights=None)


def _load_safetensors(module: nn.Module, path: Path, architecture: str) -> None:
    if not path.is_file():
        raise ModelLoadError(
            f"Weights file {path} does not exist.",
            "Pass the path of a .safetensors state dict for the model.",
        )
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelLoadError(
            f"Weights file {path} is not a readable safetensors file ({exc}).",
            "Save the state dict with safetensors.torch.save_file(model.state_dict(), path).",
        ) from None
    result = module.load_state_dict(state, strict=False)
    problems = [*result.missing_keys, *result.unexpected_keys]
    if problems:
        raise ModelLoadError(
            f"Weights file {path} does not fit {architecture}: "
            f"{len(result.missing_keys)} missing and {len(result.unexpected_keys)} unexpected "
            f"tensors (first: {', '.join(problems[:4])}).",
            f"Pass a state dict saved from a torchvision {architecture}, or pick the matching --model.",
        )


def _load_imagenet(module: nn.Module, architecture: str, cache_dir: Path) -> str:
    weights = tvm.get_model_weights(architecture).DEFAULT
    cached = cache_dir / os.path.basename(weights.url)
    if not cached.is_file() and not downloads_allowed():
        raise ModelLoadError(
            f"ImageNet weights for {architecture} are not in {cache_dir} and downloads are off.",
            f"Put {cached.name} there (from {weights.url}), pass --weights FILE.safetensors, "
            "or use --allow-random-weights for a demo.",
        )
    try:
        state = weights.get_state_dict(progress=False, model_dir=str(cache_dir), check_hash=True)
    except Exception as exc:  # network, hash or disk failures all mean: no weights
        raise ModelLoadError(
            f"Could not get ImageNet weights for {architecture}: not in {cache_dir} and the "
            f"download from {weights.url} failed ({type(exc).__name__}: {exc}).",
            f"Put {cached.name} in {cache_dir}, pass --weights FILE.safetensors, "
            "or use --allow-random-weights for a demo.",
        ) from None
    module.load_state_dict(state)
    return f"{weights} ({cached.name})"


def load_target_model(
    architecture: str,
    weights: str | None = None,
    allow_random_weights: bool = False,
    cache_dir: Path | None = None,
    seed: int = 0,
) -> LoadedModel:
    """The model in eval mode, with weights as described in the module docstring."""
    module = build_architecture(architecture, seed)
    if weights:
        path = Path(weights)
        _load_safetensors(module, path, architecture)
        source = f"file {path.name}"
    else:
        try:
            source = _load_imagenet(module, architecture, cache_dir or torch_cache_dir())
        except ModelLoadError as exc:
            if not allow_random_weights:
                raise
            log.warning("using RANDOM weights for %s: %s", architecture, exc.problem)
            source = f"random (seed {seed}; no trained weights: {exc.problem})"
    return LoadedModel(architecture, module.eval(), source)


def pick_device(requested: str | None) -> torch.device:
    """The requested device if this host has it, else an InputError that says so."""
    return torch.device(resolve_device(requested))


@dataclass(frozen=True)
class TargetSpec:
    """Everything that decides the loaded target module, and nothing else: the cache key."""

    architecture: str
    weights: str | None
    allow_random_weights: bool
    seed: int
    device: str
    cache_dir: Path | None

    @classmethod
    def of(
        cls, options: PipelineOptions, cache_dir: Path | None = None, default_device: str | None = None
    ) -> TargetSpec:
        """The job's target model; `cache_dir` and `default_device` come from the worker's settings
        (the job's own `device` option wins)."""
        return cls(
            architecture=options.model,
            weights=options.weights,
            allow_random_weights=options.allow_random_weights,
            seed=options.seed,
            device=str(pick_device(options.device or default_device)),
            # Resolved now, so the model cache tells apart loads from different torch caches
            # (a changed TORCH_HOME or HOME) and never answers with another cache's weights.
            cache_dir=cache_dir or torch_cache_dir(),
        )


# One model kept per process: consecutive jobs and shards of one job usually share it, and a
# second would double the memory a worker needs.
@lru_cache(maxsize=1)
def target_model(spec: TargetSpec) -> LoadedModel:
    """The target model in eval mode on its device, loaded once per spec."""
    loaded = load_target_model(
        spec.architecture, spec.weights, spec.allow_random_weights, spec.cache_dir, spec.seed
    )
    loaded.module.to(torch.device(spec.device))
    return loaded
