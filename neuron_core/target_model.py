"""Load the target model: a torchvision or timm architecture, its weights and its preprocessing.

Weights come from, in order: a user's safetensors state dict (never a pickle from a user), the
ImageNet weights in the torch cache (downloaded only when downloads are allowed), or random
weights, and random only when the caller explicitly allows it.

`target_model(TargetSpec.of(options, ...))` is the one way a stage gets a target model: one
bounded cache per process, keyed by everything that changes the loaded module.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import torch
import torchvision.models as tvm
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from neuron_atlas_client.contracts.hierarchy import TargetRecord
from neuron_atlas_client.contracts.models import IMAGENET_EVAL, Preprocessing, WeightsSource
from neuron_atlas_client.errors import InputError, ModelLoadError
from neuron_atlas_client.options import PipelineOptions
from neuron_core.architectures import Architecture, classifier_weight_key
from neuron_core.weights_check import (
    ModelTooLarge,
    build_on_meta,
    check_fits,
    compare_shapes,
    parameter_count,
    shapes_of,
)
from shared.models.devices import resolve_device
from shared.models.hub import downloads_allowed
from shared.models.registered_model import RegisteredWeights
from shared.models.safetensors_file import SafetensorsSummary, check_safetensors, file_sha256

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """A target model in eval mode, its input transform and where its weights came from."""

    architecture: str
    module: nn.Module
    weights: str  # in plain words
    preprocessing: Preprocessing = IMAGENET_EVAL
    source: WeightsSource = "random"
    sha256: str | None = None
    model_id: str | None = None
    warnings: tuple[str, ...] = ()  # what loading changed (float64 weights cast, ...)

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def record(self) -> TargetRecord:
        """What `hierarchy.json` says about the model (models.target)."""
        return TargetRecord(
            architecture=self.architecture,
            weights=self.weights,
            source=self.source,
            model_id=self.model_id,
            sha256=self.sha256,
            num_classes=num_outputs(self.module),
            preprocessing=self.preprocessing,
        )


def torch_cache_dir() -> Path:
    """Where torchvision keeps downloaded checkpoints (`$TORCH_HOME/hub/checkpoints`)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def build_architecture(architecture: str, seed: int = 0, num_classes: int | None = None) -> nn.Module:
    """The named architecture (`resnet18`, `torchvision:NAME`, `timm:NAME`) with random weights."""
    return Architecture.parse(architecture).build(num_classes, seed)


def num_outputs(module: nn.Module) -> int | None:
    key = classifier_weight_key(module)
    weight = module.state_dict().get(key) if key else None
    return int(weight.shape[0]) if weight is not None else None


def read_state_dict(path: Path, name: str | None = None) -> dict[str, torch.Tensor]:
    """A safetensors state dict; never a pickle (unpickling runs code). `name` is how messages
    call the file (a registry check names no worker path)."""
    name = name or str(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        reason = type(exc).__name__ if name != str(path) else str(exc)
        raise ModelLoadError(
            f"Weights file {name} is not a readable safetensors file ({reason}).",
            "Save the state dict with safetensors.torch.save_file(model.state_dict(), path).",
        ) from None


def read_header(path: Path, name: str | None = None) -> SafetensorsSummary:
    """The file's header (tensor names, shapes, dtypes), checked: nothing is loaded yet."""
    if not path.is_file():
        raise ModelLoadError(
            f"Weights file {name or path} does not exist.",
            "Pass the path of a .safetensors state dict for the model.",
        )
    try:
        return check_safetensors(path, name or str(path))
    except InputError as exc:
        raise ModelLoadError(exc.problem, exc.fix) from None


def load_strictly(module: nn.Module, state: dict[str, torch.Tensor], architecture: str) -> None:
    """Load `state` into `module`, every tensor present and of the right shape, or raise
    WeightsMismatch naming the missing, unexpected and mismatched keys."""
    compare_shapes(shapes_of(module), {key: tuple(t.shape) for key, t in state.items()}, architecture)
    module.load_state_dict(state, strict=True)


def check_size(arch: Architecture, num_classes: int | None, max_parameters: int | None) -> None:
    """Refuse an architecture over the parameter cap before it is built (meta device)."""
    if max_parameters is None:
        return
    parameters = parameter_count(build_on_meta(arch, num_classes))
    if parameters > max_parameters:
        raise ModelTooLarge(
            f"{arch} has {parameters:,} parameters; this deployment runs models of at most "
            f"{max_parameters:,}.",
            "Use a smaller model, or ask the operator to raise the workers' MAX_MODEL_PARAMETERS.",
        )


def _load_imagenet(module: nn.Module, arch: Architecture, cache_dir: Path) -> str:
    if arch.zoo == "timm":
        if not downloads_allowed():
            raise ModelLoadError(
                f"Pretrained weights for {arch} come from the Hugging Face hub, and downloads are off.",
                "Pass --weights FILE.safetensors, or use --allow-random-weights for a demo.",
            )
        import timm  # timm: a second or more of import; only timm: models need it

        try:
            module.load_state_dict(timm.create_model(arch.name, pretrained=True).state_dict())
        except Exception as exc:  # network or hub failures all mean: no weights
            raise ModelLoadError(
                f"Could not get pretrained weights for {arch} from the hub ({type(exc).__name__}).",
                "Pass --weights FILE.safetensors, or use --allow-random-weights for a demo.",
            ) from None
        return f"timm pretrained {arch.name}"
    weights = tvm.get_model_weights(arch.name).DEFAULT
    cached = cache_dir / os.path.basename(weights.url)
    if not cached.is_file() and not downloads_allowed():
        raise ModelLoadError(
            f"ImageNet weights for {arch} are not in {cache_dir} and downloads are off.",
            f"Put {cached.name} there (from {weights.url}), pass --weights FILE.safetensors, "
            "or use --allow-random-weights for a demo.",
        )
    try:
        state = weights.get_state_dict(progress=False, model_dir=str(cache_dir), check_hash=True)
    except Exception as exc:  # network, hash or disk failures all mean: no weights
        raise ModelLoadError(
            f"Could not get ImageNet weights for {arch}: not in {cache_dir} and the "
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
    num_classes: int | None = None,
    preprocessing: Preprocessing | None = None,
    source: WeightsSource | None = None,
    model_id: str | None = None,
    max_parameters: int | None = None,
    file_name: str | None = None,
) -> LoadedModel:
    """The model in eval mode, with weights as described in the module docstring.

    With a weights file and no `num_classes`, the head's size is read off the file, so a
    fine-tuned 10-class checkpoint loads without being told. The file's header is compared with
    the architecture on the meta device first (`weights_check`), so a file that does not fit,
    or a model over `max_parameters`, is refused before anything is allocated. `file_name`: how
    messages name the file, where its path is nobody's business (a registry check)."""
    arch = Architecture.parse(architecture)
    sha256: str | None = None
    warnings: tuple[str, ...] = ()
    if weights:
        path = Path(weights)
        name = file_name or str(path)
        fit = check_fits(arch, read_header(path, name), num_classes, name, max_parameters)
        warnings = fit.warnings
        for warning in warnings:
            log.warning("%s: %s", name, warning)
        module = arch.build(fit.num_classes, seed)
        load_strictly(module, read_state_dict(path, name), str(arch))
        sha256 = file_sha256(path)
        words, kind = f"file {path.name}", source or "file"
    else:
        check_size(arch, num_classes, max_parameters)
        module = arch.build(num_classes, seed)
        try:
            words, kind = _load_imagenet(module, arch, cache_dir or torch_cache_dir()), "imagenet"
        except ModelLoadError as exc:
            if not allow_random_weights:
                raise
            log.warning("using RANDOM weights for %s: %s", arch, exc.problem)
            words, kind = f"random (seed {seed}; no trained weights: {exc.problem})", "random"
    return LoadedModel(
        architecture=str(arch),
        module=module.eval(),
        weights=words,
        preprocessing=preprocessing or arch.preprocessing(module),
        source=kind,
        sha256=sha256,
        model_id=model_id,
        warnings=warnings,
    )


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
    num_classes: int | None = None
    preprocessing: Preprocessing | None = None
    source: WeightsSource | None = None
    model_id: str | None = None
    max_parameters: int | None = None

    @classmethod
    def of(
        cls,
        options: PipelineOptions,
        cache_dir: Path | None = None,
        default_device: str | None = None,
        registered: RegisteredWeights | None = None,
        max_parameters: int | None = None,
    ) -> TargetSpec:
        """The job's target model; `cache_dir` and `default_device` come from the worker's settings
        (the job's own `device` option wins); `registered`: a model from the registry (API jobs
        that name `model_id`), its weights already fetched to this worker's disk; `max_parameters`:
        the worker's cap, so a job cannot name a model larger than its memory holds."""
        spec = cls(
            architecture=options.model,
            weights=options.weights,
            allow_random_weights=options.allow_random_weights,
            seed=options.seed,
            device=str(pick_device(options.device or default_device)),
            # Resolved now, so the model cache tells apart loads from different torch caches
            # (a changed TORCH_HOME or HOME) and never answers with another cache's weights.
            cache_dir=cache_dir or torch_cache_dir(),
            num_classes=options.num_classes,
            preprocessing=options.preprocessing,
            max_parameters=max_parameters,
        )
        if registered is None:
            return spec
        record = registered.record
        return replace(
            spec,
            architecture=record.architecture,
            weights=str(registered.path),  # named by its sha256: a new upload is a new key
            num_classes=record.num_classes,
            preprocessing=options.preprocessing or record.preprocessing,
            source=record.source.kind,
            model_id=record.id,
        )


# One model kept per process: consecutive jobs and shards of one job usually share it, and a
# second would double the memory a worker needs. The key holds the model id and the weights'
# sha256 (in the cached file's name), so a re-uploaded model is never answered from the cache.
@lru_cache(maxsize=1)
def target_model(spec: TargetSpec) -> LoadedModel:
    """The target model in eval mode on its device, loaded once per spec."""
    loaded = load_target_model(
        spec.architecture,
        spec.weights,
        spec.allow_random_weights,
        spec.cache_dir,
        spec.seed,
        num_classes=spec.num_classes,
        preprocessing=spec.preprocessing,
        source=spec.source,
        model_id=spec.model_id,
        max_parameters=spec.max_parameters,
    )
    device = torch.device(spec.device)
    loaded.module.to(device)
    if device.type == "cpu":
        # oneDNN runs convolutions and pooling on channels-last tensors faster: ResNet18 at
        # batch 64 took 16% less time, its stem's max-pool a quarter. Same arithmetic, other
        # memory order; each conv's output follows its weights, so inputs need no change.
        loaded.module.to(memory_format=torch.channels_last)
    return loaded
