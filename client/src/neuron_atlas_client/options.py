"""The options of one job: the same model for the CLI, the embedded runner and (later) the API spec."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from neuron_atlas_client.contracts.models import Preprocessing

DEFAULT_CAPTION_MODEL = "Salesforce/blip-image-captioning-base"
DEFAULT_EMBED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_TARGET_MODEL = "resnet18"
DEFAULT_UNCERTAINTY_BUDGET = 1.5
MAX_MODELS = 4  # target models of one job (issue 27): captions and clusters once, the rest per model
# The fields each model of a multi-model job brings (`TargetModel`); every other option is the job's.
MODEL_FIELDS = ("model", "model_id", "weights", "num_classes", "preprocessing", "layers")
# Of those, the ones that name a model: a multi-model job names each in `models`. The rest hold for
# every model of the job that does not set its own.
NAMING_FIELDS = ("model", "model_id", "weights")
SHARED_MODEL_FIELDS = ("num_classes", "preprocessing", "layers")
MODEL_KEY_PATTERN = "^[a-z0-9][a-z0-9_.-]{0,39}$"

Ranking = Literal["per_layer", "global"]
GroupRule = Literal["intersect", "direct"]
IntervalMethod = Literal["wilson", "clopper_pearson"]
PassPrecision = Literal["auto", "float32", "bfloat16"]


# A module name holds something besides ASCII whitespace. The same rule in the validator and in
# the JSON schema, so a client that follows the schema is never refused (Python's `str.strip`
# and JSON Schema's `\\s` disagree on some control characters).
NAME_PATTERN = "[^ \\t\\n\\r\\f\\v]"


def _budget_schema(schema: dict[str, Any]) -> None:
    """`uncertainty_budget` in the JSON schema: a non-negative number, or "full"."""
    for branch in schema.get("anyOf", []):
        if branch.get("type") == "number":
            branch["minimum"] = 0


def _is_none(value: object) -> bool:
    return value is None


def _layer_names(value: object, info: ValidationInfo) -> object:
    """ "a,b" strings come from the CLI and the environment (Python mode); a JSON spec must send
    the array its schema shows. Lists become tuples, as strict validation wants them."""
    if isinstance(value, str) and info.mode == "python":
        names = tuple(part.strip() for part in value.split(",") if part.strip())
        return names or None
    return tuple(value) if isinstance(value, list) else value


def _check_layer_names(value: tuple[str, ...] | None) -> tuple[str, ...] | None:
    # An empty list would run the default layers and record none: say so instead.
    if value is not None and (not value or not all(re.search(NAME_PATTERN, name) for name in value)):
        raise ValueError("name at least one module (no empty names), or leave layers out for the default")
    return value


def _model_ids_schema(schema: dict[str, Any]) -> None:
    for branch in schema.get("anyOf", []):
        if branch.get("type") == "array":
            branch["items"] = {"type": "string", "pattern": "^[0-9a-f]{32}$"}


def _some_names_schema(schema: dict[str, Any]) -> None:
    """`layers` in the JSON schema: a non-empty list of names, as `_some_layers` checks."""
    for branch in schema.get("anyOf", []):
        if branch.get("type") == "array":
            branch["minItems"] = 1
            branch["items"] = {"type": "string", "pattern": NAME_PATTERN}


class TargetModel(BaseModel):
    """One target model of a multi-model job (`PipelineOptions.models`): the options that name and
    feed a model; every other option is the job's, shared by all its models."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str | None = Field(
        None,
        pattern=MODEL_KEY_PATTERN,
        description="The model's name in the result (its folder `models/{key}/`, its routes); "
        "default: its model_id, else its weights file's stem, else its architecture.",
    )
    model: str = Field(DEFAULT_TARGET_MODEL, max_length=200, description="As the job's `model`.")
    model_id: str | None = Field(None, pattern="^[0-9a-f]{32}$", description="As the job's `model_id`.")
    weights: str | None = Field(None, description="As the job's `weights` (CLI and embedded runs only).")
    num_classes: int | None = Field(None, ge=1, le=1_000_000, description="As the job's `num_classes`.")
    preprocessing: Preprocessing | None = Field(None, description="As the job's `preprocessing`.")
    layers: tuple[str, ...] | None = Field(
        None,
        description="As the job's `layers`.",
        json_schema_extra=lambda schema: _some_names_schema(schema),
    )

    @field_validator("layers", mode="before")
    @classmethod
    def _split_layers(cls, value: object, info: ValidationInfo) -> object:
        return _layer_names(value, info)

    @field_validator("layers")
    @classmethod
    def _some_layers(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return _check_layer_names(value)

    @property
    def resolved_key(self) -> str:
        """`key`, or one made from what names the model (lower case, other characters as -)."""
        if self.key is not None:
            return self.key
        if self.model_id is not None:
            return self.model_id
        name = (
            self.weights.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
            if self.weights
            else self.model
        )
        slug = re.sub("[^a-z0-9_.-]+", "-", name.lower()).strip("-._") or "model"
        return slug[:40]


class PipelineOptions(BaseModel):
    """Every option that changes a job's result; recorded, resolved, in `hierarchy.json`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # 1. Caption
    caption_model: str = Field(DEFAULT_CAPTION_MODEL, description="BLIP model id or local path.")
    caption_batch_size: int = Field(16, ge=1, le=1024, description="Images per captioning batch.")
    max_new_tokens: int = Field(30, ge=1, le=128, description="Upper bound on caption length.")
    # 2. Embed
    embed_model: str = Field(DEFAULT_EMBED_MODEL, description="sentence-transformers id or path.")
    embed_batch_size: int = Field(256, ge=1, le=8192, description="Captions per embedding batch.")
    # 3. Cluster
    ann_threshold: int = Field(
        50_000, ge=2, description="Above this many captions FINCH uses approximate neighbours."
    )
    seed: int = Field(
        0,
        ge=0,
        le=2**63 - 1,  # torch's seed takes 64 bits; JSON clients hold a signed 64-bit integer
        description="Seeds every random choice so a job repeats exactly.",
    )
    # 4. Activations
    model: str = Field(
        DEFAULT_TARGET_MODEL,
        max_length=200,
        description="Architecture: `torchvision:NAME`, `timm:NAME`, or a bare torchvision name.",
    )
    model_id: str | None = Field(
        None,
        pattern="^[0-9a-f]{32}$",
        description="API: a model registered with POST /v1/models (its architecture, weights and "
        "preprocessing replace `model`).",
    )
    weights: str | None = Field(
        None,
        description="CLI and embedded runs only: a .safetensors state dict for `model`; default: "
        "pretrained weights. The API never takes a path: register the model instead.",
    )
    num_classes: int | None = Field(
        None, ge=1, le=1_000_000, description="Outputs of the head; default: read off the weights."
    )
    preprocessing: Preprocessing | None = Field(
        None, description="Overrides the model's own evaluation transform."
    )
    allow_random_weights: bool = Field(
        False, description="Use random weights when no trained weights can be had (demos, tests)."
    )
    strict: bool = Field(
        False,
        description="Fail instead of warning when images carry class labels and the target model "
        "gets them near chance, or far below what another input size or normalisation gives "
        "(wrong input size, normalisation, or a head that does not match the labels).",
    )
    layers: tuple[str, ...] | None = Field(
        None,
        description="Module names to read; default: the output of each residual stage.",
        json_schema_extra=lambda schema: _some_names_schema(schema),
    )
    top_fraction: float = Field(
        0.1, gt=0.0, le=1.0, description="Share of each layer's channels active per image."
    )
    ranking: Ranking = Field(
        "per_layer", description="Rank channels per layer, or all selected neurons together."
    )
    batch_size: int = Field(64, ge=1, le=4096, description="Images per forward pass.")
    device: str | None = Field(
        None,
        pattern=r"^(cpu|cuda(:[0-9]+)?|mps)$",
        description="torch device: cpu, cuda, cuda:N or mps; default: cuda when present.",
    )
    # 5./6. Groups
    min_support: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="A neuron is in a level-1 group when active in this share of its images.",
    )
    group_rule: GroupRule = Field(
        "intersect", description="A parent's group: the intersection of its children's, or recounted."
    )
    exclude_generic: bool = Field(
        False,
        description="Leave frequent neurons (active in >= min_support of all images, so they join "
        "any cluster's group by their base rate) out of every group; off by default, as in the "
        "paper's rule.",
    )
    # 8. Uncertainty (seeded by `seed`; docs/uncertainty.md says what each test's null is)
    uncertainty_budget: float | Literal["full"] = Field(
        DEFAULT_UNCERTAINTY_BUDGET,
        description="What the uncertainty stage may spend, in forward-pass equivalents per image "
        "(the activation pass is 1; each kind of pass priced by its FLOPs and what a bfloat16 pass "
        "was measured to cost on the kind of device): it plans the "
        "dropout and augmentation passes on a seeded sample, the pruning curve on a held-out "
        "sample, and the specificity tests on the largest concepts that fit, and records the plan. "
        "0: statistics, bootstraps and difference tests only (no model passes). full: every method "
        "on every image and concept, the importance test included.",
        json_schema_extra=lambda schema: _budget_schema(schema),
    )
    alpha: float = Field(0.05, gt=0.0, lt=1.0, description="Intervals at 1 - alpha; tests at alpha.")
    interval: IntervalMethod = Field(
        "clopper_pearson",
        description="Support interval: clopper_pearson (never below nominal coverage) or wilson "
        "(narrower; under-covers near p = 0.5 at small n).",
    )
    bootstrap_resamples: int = Field(
        200, ge=0, le=100_000, description="Bootstrap resamples for group stability; 0: none."
    )
    clustering_resamples: int = Field(
        10,
        ge=0,
        le=1000,
        description="FINCH runs on 80% subsamples of the captions, for each cluster's clustering "
        "stability; 0: none.",
    )
    difference_permutations: int = Field(
        999,
        ge=0,
        le=100_000,
        description="Permutations of a parent's images among its children per difference test "
        "(the group rule re-run in each; sequential stopping); 0: no difference tests.",
    )
    mc_samples: int = Field(
        8,
        ge=0,
        le=1000,
        description="Dropout passes per sampled image (the model's own dropout, else dropout "
        "injected before the read layers); 0: none.",
    )
    injected_dropout_rate: float = Field(
        0.1,
        gt=0.0,
        lt=1.0,
        description="Dropout rate injected at test time before each read layer of a model without "
        "dropout there (Ledda et al. 2023), unless labelled images calibrate another.",
    )
    tta_samples: int = Field(
        4,
        ge=0,
        le=1000,
        description="Test-time augmentation passes per sampled image (input sensitivity); 0: none.",
    )
    ablation_max_images: int = Field(
        8,
        ge=1,
        le=100_000,
        description="At most this many of a concept's images held out per specificity test (and "
        "zeroed per importance test).",
    )
    specificity_reference_images: int = Field(
        16,
        ge=1,
        le=100_000,
        description="Images from outside a concept (a seeded choice) that its held-out images are "
        "compared with in the specificity test.",
    )
    ablation_random_sets: int = Field(
        39,
        ge=0,
        le=10_000,
        description="Uniform random neuron sets per importance test (with --uncertainty-budget "
        "full; its smallest p-value is 1 / (sets + 1)); 0: no importance test.",
    )
    pruning_random_sets: int = Field(
        10, ge=0, le=100, description="Random prunings at each share pruned beside significance pruning."
    )
    pruning_thresholds: tuple[float, ...] = Field(
        (0.001, 0.05, 0.25),
        min_length=1,
        description="q-value thresholds of the pruning curve: at each, neurons in no membership "
        "selective at that q are pruned (alpha is always one of them).",
    )
    pass_precision: PassPrecision = Field(
        "auto",
        description="Number format of the uncertainty stage's model passes (dropout, augmentation, "
        "ablation, pruning): auto = bfloat16 where the device computes it natively (a CUDA GPU with "
        "bfloat16, a CPU with AMX or AVX-512 BF16), else float32. The activation pass that defines "
        "the groups is always float32.",
    )
    # Input limits
    max_image_pixels: int = Field(
        50_000_000, ge=1, description="Larger images are skipped (decompression bombs)."
    )
    shard_size: int = Field(256, ge=1, le=65_536, description="Images per artifact shard.")
    # Several target models on one collection (issue 27; docs/comparison.md, 'One job, several models')
    # Left out of a document when None (exclude_if): a single-model job's spec.json and
    # hierarchy.json stay what they were, and readers of that version still read them.
    models: tuple[TargetModel, ...] | None = Field(
        None,
        exclude_if=_is_none,
        min_length=2,
        max_length=MAX_MODELS,
        description=f"Two to {MAX_MODELS} target models explained on the same images: captions, "
        "embeddings, clusters and labels are computed once; activations, groups and uncertainty "
        "per model. The first is the baseline the others are compared with. Leave model, "
        "model_id and weights out when given; num_classes, preprocessing and layers hold for "
        "every model that sets none of its own.",
    )
    model_ids: tuple[str, ...] | None = Field(
        None,
        exclude_if=_is_none,
        min_length=2,
        max_length=MAX_MODELS,
        description=f"API: two to {MAX_MODELS} registered models (POST /v1/models) explained on the "
        "same images, the first the baseline; shorthand for `models` of model_id entries (one "
        "model: model_id).",
        json_schema_extra=lambda schema: _model_ids_schema(schema),
    )

    # "a,b" strings come from the CLI and the environment (Python mode); a JSON spec must send
    # the array its schema shows. Lists become tuples here, as strict validation wants them.
    @field_validator("layers", mode="before")
    @classmethod
    def _split_layers(cls, value: object, info: ValidationInfo) -> object:
        return _layer_names(value, info)

    @field_validator("layers")
    @classmethod
    def _some_layers(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return _check_layer_names(value)

    @field_validator("uncertainty_budget")
    @classmethod
    def _budget_not_negative(cls, value: float | str) -> float | str:
        if isinstance(value, float) and not value >= 0:  # NaN included
            raise ValueError("the budget is a number >= 0, or full")
        return value

    @field_validator("pruning_thresholds", mode="before")
    @classmethod
    def _split_thresholds(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, str) and info.mode == "python":
            return tuple(float(part) for part in value.split(",") if part.strip())
        return tuple(value) if isinstance(value, list) else value

    @field_validator("pruning_thresholds")
    @classmethod
    def _thresholds_are_probabilities(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0.0 < q <= 1.0 for q in value):
            raise ValueError("each threshold must be in (0, 1]")
        return tuple(sorted(set(value)))

    @field_validator("model_ids", mode="before")
    @classmethod
    def _ids_to_tuple(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, str) and info.mode == "python":  # "a,b" from the CLI
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return tuple(value) if isinstance(value, list) else value

    @field_validator("model_ids")
    @classmethod
    def _ids_are_ids(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and not all(re.fullmatch("[0-9a-f]{32}", i) for i in value):
            raise ValueError("each model id is 32 hex digits, as POST /v1/models returns it")
        return value

    @model_validator(mode="after")
    def _one_way_to_name_models(self) -> PipelineOptions:
        """Models are named one way: the job's own model fields, `models`, or `model_ids`; and
        each model of a job has its own key."""
        if self.models is not None and self.model_ids is not None:
            raise ValueError("give models or model_ids, not both")
        if self.models is not None or self.model_ids is not None:
            named = [name for name in NAMING_FIELDS if getattr(self, name) != _DEFAULTS[name]]
            if named:
                raise ValueError(
                    f"{', '.join(named)} given beside models/model_ids: name every model of a "
                    "multi-model job in models (each entry has these fields)"
                )
        keys = [model.resolved_key for model in self.target_models()]
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        if repeated:
            raise ValueError(
                f"two models have the key {', '.join(repeated)}: give each model of the job a "
                "distinct key (models[].key), or name different models"
            )
        return self

    # --- the job's target models (issue 27) --------------------------------------------------

    def target_models(self) -> tuple[TargetModel, ...]:
        """The job's target models, the baseline first: `models`, `model_ids`, or the one the
        job's own fields name."""
        if self.models is None and self.model_ids is None:
            return (TargetModel(**{name: getattr(self, name) for name in MODEL_FIELDS}),)
        listed = self.models or tuple(TargetModel(model_id=model_id) for model_id in self.model_ids or ())
        # The job's own layers, preprocessing and head size hold for a model that sets none.
        shared = {name: value for name in SHARED_MODEL_FIELDS if (value := getattr(self, name)) is not None}
        return tuple(
            model.model_copy(update={k: v for k, v in shared.items() if getattr(model, k) is None})
            for model in listed
        )

    @property
    def multi_model(self) -> bool:
        """Several target models: per-model artifacts under `models/{key}/`. A job of one model
        (however named) keeps the single-model layout."""
        return len(self.target_models()) > 1

    def for_model(self, model: TargetModel) -> PipelineOptions:
        """The options of one model's run: the job's, with the model's own fields, as a
        single-model job of that model would have them."""
        values = self.model_dump(exclude={"models", "model_ids"})
        values.update({name: getattr(model, name) for name in MODEL_FIELDS})
        return PipelineOptions.model_validate(values)


_DEFAULTS = {name: PipelineOptions.model_fields[name].default for name in NAMING_FIELDS}
