"""The model zoos a target model comes from: every torchvision classification model and every timm
model, named `torchvision:NAME` or `timm:NAME` (a bare name means torchvision, so `resnet18` keeps
its meaning), built with random weights and their own evaluation preprocessing.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
import torchvision.models as tvm
from torch import nn

from neuron_atlas_client.contracts.models import Preprocessing
from neuron_atlas_client.errors import InputError

ZOOS = ("torchvision", "timm")


@dataclass(frozen=True)
class Architecture:
    zoo: str
    name: str

    @classmethod
    def parse(cls, text: str) -> Architecture:
        """`timm:convnext_tiny`, `torchvision:resnet50` or a bare torchvision name; checked."""
        zoo, sep, name = text.strip().partition(":")
        if not sep:
            zoo, name = "torchvision", zoo
        if zoo not in ZOOS:
            raise InputError(
                f"Unknown model zoo {zoo!r} in {text!r}.",
                "Name a model as torchvision:NAME or timm:NAME (e.g. timm:convnext_tiny).",
            )
        known = names(zoo)
        if name not in known:
            close = difflib.get_close_matches(name, known, n=6, cutoff=0.6)
            hint = f"Close matches: {', '.join(f'{zoo}:{n}' for n in close)}." if close else ""
            raise InputError(
                f"Unknown {zoo} architecture {name!r}.",
                f"{hint} `neuron-atlas layers --list-architectures {zoo}` lists them all.".strip(),
            )
        return cls(zoo, name)

    def __str__(self) -> str:
        # Bare torchvision names stay bare, so records made before timm support read the same.
        return self.name if self.zoo == "torchvision" else f"{self.zoo}:{self.name}"

    def build(self, num_classes: int | None = None, seed: int = 0) -> nn.Module:
        """The architecture with random weights (seeded, so random weights repeat exactly)."""
        torch.manual_seed(seed)
        extra: dict[str, Any] = {} if num_classes is None else {"num_classes": num_classes}
        if self.zoo == "timm":
            import timm  # timm: a second or more of import; only timm: models need it

            module: nn.Module = timm.create_model(self.name, pretrained=False, **extra)
        else:
            module = tvm.get_model(self.name, weights=None, **extra)
        return module

    def preprocessing(self, module: nn.Module) -> Preprocessing:
        """The evaluation transform the model was trained for: timm's pretrained config, or the
        transform of torchvision's default ImageNet weights."""
        if self.zoo == "timm":
            import timm.data  # timm: a second or more of import; only timm: models need it

            config = timm.data.resolve_model_data_config(module)
            size = int(config["input_size"][-1])
            return Preprocessing(
                input_size=size,
                resize=int(size / float(config.get("crop_pct", 0.875))),
                mean=tuple(config["mean"]),
                std=tuple(config["std"]),
                interpolation=_interpolation(str(config.get("interpolation", "bilinear"))),
            )
        transform = tvm.get_model_weights(self.name).DEFAULT.transforms()
        return Preprocessing(
            input_size=int(transform.crop_size[0]),
            resize=int(transform.resize_size[0]),
            mean=tuple(transform.mean),
            std=tuple(transform.std),
            interpolation=_interpolation(transform.interpolation.value),
        )


def _interpolation(name: str) -> str:
    return name if name in ("bilinear", "bicubic", "nearest") else "bilinear"


@lru_cache(maxsize=2)
def names(zoo: str) -> list[str]:
    if zoo == "timm":
        import timm  # timm: a second or more of import; only timm: models need it

        return sorted(timm.list_models())
    return sorted(tvm.list_models(module=tvm))


def classifier_weight_key(module: nn.Module) -> str | None:
    """The state-dict key of the classifier head's weight: timm's `get_classifier()`, else the
    last linear layer. Used to read `num_classes` off a checkpoint."""
    getter = getattr(module, "get_classifier", None)
    head = getter() if callable(getter) else None
    for name, child in reversed(list(module.named_modules())):
        if (head is not None and child is head) or (head is None and isinstance(child, nn.Linear)):
            return f"{name}.weight" if name else "weight"
    return None
