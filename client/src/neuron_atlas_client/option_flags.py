"""The `run` command's flags, generated from `PipelineOptions`: one source for every option's
name, default, bounds and help (its Field description), so the CLI cannot drift from the model
that the API and the runner use."""

from __future__ import annotations

import argparse
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from neuron_atlas_client.errors import InputError
from neuron_atlas_client.options import MAX_MODELS, MODEL_FIELDS, PipelineOptions, TargetModel

# Where each group of flags begins, in the model's field order.
GROUP_STARTS = {
    "caption_model": "captions and clustering",
    "model": "target model and neurons",
    "alpha": "uncertainty (seeded by --seed)",
    "max_image_pixels": "input limits",
}
# A registered model exists only in the suite: the CLI names models and weights files directly.
API_ONLY = {"model_id", "model_ids"}
# Not a flag of its own: `--also-model SPEC` (repeatable) names a multi-model job's other models.
NOT_FLAGS = {"models"}
ALSO_MODEL_HELP = (
    "explain another target model on the same images (repeatable, at most {extra} more): captions, "
    "clusters and labels are computed once, activations, groups and uncertainty per model, and "
    "each is compared with the first (--model ...). SPEC: an architecture, then KEY=VALUE pairs, "
    "comma-separated: {example}; keys: model, weights, num_classes, layers (A+B), key (its name in "
    "the result){api}. --model, --layers, --preprocessing and --num-classes hold for it unless "
    "SPEC names its own"
)
BOUND_SIGNS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}


def user_path(text: str) -> Path:
    """A path as a user typed it: `~` expanded (the shell leaves `--out=~/x` alone), relative
    paths taken from the working directory. Resolved (symlinks followed) where it is used."""
    return Path(text).expanduser()


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_option_flags(parser: argparse.ArgumentParser, api: bool = False) -> None:
    """One flag per option. Values are checked by the model (`options_from_args`), so a bad
    value gets the same message here as in an API spec. `api`: for a gateway (`remote submit`),
    with the API's own options (`--model-id`)."""
    group = parser.add_argument_group("options")
    for name, field in PipelineOptions.model_fields.items():
        if (name in API_ONLY and not api) or name in NOT_FLAGS:
            continue
        if name in GROUP_STARTS:
            group = parser.add_argument_group(GROUP_STARTS[name])
        group.add_argument(flag(name), dest=name, default=None, help=_help(field), **_kind(field))
        if name == "model":
            example = "model_id=ID,key=v2" if api else "resnet18,weights=finetuned.safetensors,key=ft"
            group.add_argument(
                "--also-model",
                dest="also_model",
                action="append",
                metavar="SPEC",
                help=ALSO_MODEL_HELP.format(
                    extra=MAX_MODELS - 1, example=example, api=", model_id" if api else ""
                ).replace("%", "%%"),
            )


def parse_model_spec(text: str) -> dict[str, Any]:
    """`--also-model SPEC`: `ARCH` and/or `KEY=VALUE` pairs, comma-separated, as a `TargetModel`'s
    fields (layers joined by +); an InputError that shows the form otherwise."""
    fields: dict[str, Any] = {}
    for index, part in enumerate(p.strip() for p in text.split(",")):
        name, equals, value = part.partition("=")
        if not equals and index == 0 and part:
            fields["model"] = part
        elif equals and name in TargetModel.model_fields and name != "preprocessing":
            fields[name] = tuple(v for v in value.split("+") if v) if name == "layers" else value
        else:
            raise InputError(
                f"--also-model {text!r}: cannot read {part!r}.",
                "Write an architecture, then KEY=VALUE pairs, e.g. --also-model "
                "resnet18,weights=finetuned.safetensors,key=ft (keys: model, weights, num_classes, "
                "layers as A+B, key, model_id).",
            )
    if "weights" in fields:
        fields["weights"] = str(user_path(fields["weights"]).resolve())
    return fields


def _kind(field: FieldInfo) -> dict[str, Any]:
    annotation = _without_none(field.annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {"metavar": "JSON"}
    if annotation is bool:
        return {"action": "store_true"}
    if typing.get_origin(annotation) is Literal:
        return {"choices": typing.get_args(annotation)}
    if annotation in (int, float):
        return {"type": annotation, "metavar": annotation.__name__.upper()}
    if typing.get_origin(annotation) is tuple:
        return {"metavar": "A,B,..."}  # the model splits the comma-separated names
    return {"metavar": "VALUE"}


def _without_none(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        return rest[0] if len(rest) == 1 else annotation
    return annotation


def _help(field: FieldInfo) -> str:
    parts = [field.description or ""]
    bounds = [
        f"{sign} {getattr(bound, attribute)}"
        for bound in field.metadata
        for attribute, sign in BOUND_SIGNS.items()
        if getattr(bound, attribute, None) is not None
    ]
    if bounds:
        parts.append(f"({', '.join(bounds)})")
    if field.default is not None and field.default is not False:
        parts.append(f"(default: {field.default})".replace("%", "%%"))
    return " ".join(p for p in parts if p)


def options_from_args(args: argparse.Namespace) -> PipelineOptions:
    """The options the flags give, defaults for the rest; a bad value is an InputError naming its flag."""
    fields = PipelineOptions.model_fields
    values = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    if "preprocessing" in values:
        try:
            values["preprocessing"] = json.loads(values["preprocessing"])
        except json.JSONDecodeError:
            raise InputError(
                "--preprocessing is not JSON.",
                'Pass e.g. \'{"input_size": 224, "resize": 256, "mean": [0.5, 0.5, 0.5], '
                '"std": [0.5, 0.5, 0.5], "interpolation": "bicubic"}\'.',
            ) from None
    if "weights" in values:  # recorded as an absolute path, so the result says which file it was
        values["weights"] = str(user_path(values["weights"]).resolve())
    also = getattr(args, "also_model", None) or []
    if also:
        # The first model is the one the job's own flags name; the rest are --also-model's.
        own = {name: values.pop(name) for name in MODEL_FIELDS if name in values}
        # The job's --layers, --preprocessing and --num-classes (and --model) hold for every
        # model whose SPEC names none of its own; weights and ids are each model's.
        common = {k: v for k, v in own.items() if k not in ("weights", "model_id")}
        values["models"] = [own, *(common | parse_model_spec(text) for text in also)]
        if len(values["models"]) > MAX_MODELS:
            raise InputError(
                f"{len(values['models'])} target models: a job explains at most {MAX_MODELS}.",
                f"Pass --also-model at most {MAX_MODELS - 1} times; run the rest as another job "
                "and compare them with neuron-atlas compare.",
            )
    try:
        return PipelineOptions(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_flag_of(err['loc'])}: {err['msg']}".replace("Value error, ", "") for err in exc.errors()
        )
        raise InputError(f"Invalid options: {problems}.", "See neuron-atlas run --help.") from None


def _flag_of(location: tuple[int | str, ...]) -> str:
    """The flag a validation error's location names: `models.1.weights` is the first
    --also-model's; the job-wide checks have no location."""
    if not location:
        return "models"
    if location[0] == "models" and len(location) > 1:
        index = int(location[1])
        field = ".".join(str(p) for p in location[2:])
        return (f"--also-model #{index}" if index else "the first model") + (f" {field}" if field else "")
    return flag("_".join(str(p) for p in location))
