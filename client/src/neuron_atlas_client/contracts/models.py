"""The target model a job explains: its input preprocessing, and a tenant's registered models.

Pure pydantic (the gateway imports it without torch). The worker side that builds and loads
models lives in `neuron_core.architectures` and `neuron_core.target_model`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from neuron_atlas_client.contracts.base import Contract, Count, omitted_when_none

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Interpolation = Literal["bilinear", "bicubic", "nearest"]
Triple = tuple[float, float, float]

#: Where a model's weights came from.
WeightsSource = Literal["upload", "bucket", "mlflow", "hub", "file", "imagenet", "random"]


class Preprocessing(Contract):
    """The evaluation transform: resize the shorter side, centre-crop a square, normalise."""

    model_config = ConfigDict(extra="forbid", frozen=True)  # a cache key

    input_size: int = Field(224, ge=16, le=1024, description="Side of the square centre crop, in pixels.")
    resize: int = Field(256, ge=16, le=2048, description="The shorter side is resized to this first.")
    mean: Triple = Field(IMAGENET_MEAN, description="Per-channel mean (RGB, on a 0-1 scale).")
    std: Triple = Field(IMAGENET_STD, description="Per-channel standard deviation (RGB, 0-1 scale).")
    interpolation: Interpolation = Field("bilinear", description="Resampling filter of the resize.")

    @model_validator(mode="after")
    def _crop_fits(self) -> Preprocessing:
        if self.resize < self.input_size:
            raise ValueError(f"resize ({self.resize}) must be at least input_size ({self.input_size})")
        if any(s <= 0 for s in self.std):
            raise ValueError("every std must be positive")
        return self


#: ResNet18's (and most ImageNet models') evaluation transform.
IMAGENET_EVAL = Preprocessing()


class ModelSourceRecord(Contract):
    """Where a registered model's weights were taken from."""

    kind: Literal["upload", "bucket", "mlflow", "hub"]
    uri: str | None = omitted_when_none(
        "The bucket prefix (relative to the tenant's area), MLflow model URI or hub id."
    )
    file_name: str | None = omitted_when_none("The uploaded or imported file's name.")


class ModelRecord(Contract):
    """A tenant's registered model (GET /v1/models/{id}); stored as models/{tenant}/{id}/model.json."""

    id: str = Field(pattern="^[0-9a-f]{32}$")
    architecture: str = Field(description="`torchvision:NAME` or `timm:NAME` (a bare name: torchvision).")
    num_classes: int = Field(ge=1, description="Outputs of the classifier head.")
    class_names: list[str] | None = omitted_when_none("One name per output, when given.")
    preprocessing: Preprocessing
    sha256: str = Field(pattern="^[0-9a-f]{64}$", description="sha256 of the safetensors file.")
    parameters: Count = Field(description="Number of parameters (weights and biases, not buffers).")
    size_bytes: Count
    source: ModelSourceRecord
    created_at: str
    warnings: list[str] | None = omitted_when_none(
        "What loading the weights changes, e.g. float64 tensors cast to float32."
    )


class ModelLayer(Contract):
    name: str
    channels: int = Field(ge=1)
    default: bool = Field(description="Read by default (when a job names no layers).")


class ModelLayers(Contract):
    """GET /v1/models/{id}/layers and `neuron-atlas layers`: the layers a job can read."""

    model_id: str | None = omitted_when_none("The registered model, for the API's answer.")
    architecture: str
    layers: list[ModelLayer]
