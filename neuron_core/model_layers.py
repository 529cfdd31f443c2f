"""The readable layers of a model, with their channel counts and which a job reads by default:
`neuron-atlas layers MODEL` and GET /v1/models/{id}/layers give the same answer."""

from __future__ import annotations

import torch
from torch import nn

from neuron_atlas_client.contracts.models import ModelLayer, ModelLayers
from neuron_atlas_client.errors import InputError
from neuron_core.layers import default_layers, readable_layers


def describe_layers(
    architecture: str, module: nn.Module, input_size: int, model_id: str | None = None
) -> ModelLayers:
    try:
        defaults = set(default_layers(module))
    except InputError:
        defaults = set()  # the model has no stages to read by default: a job must name layers
    layers = readable_layers(module, input_size, torch.device("cpu"))
    return ModelLayers(
        model_id=model_id,
        architecture=architecture,
        layers=[
            ModelLayer(name=layer.name, channels=layer.channels, default=layer.name in defaults)
            for layer in layers
        ],
    )
