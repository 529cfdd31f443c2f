"""The run command's flags come from PipelineOptions: names, defaults, bounds and help."""

from __future__ import annotations

import pytest

from neuron_atlas.cli import build_parser
from neuron_atlas_client.errors import InputError
from neuron_atlas_client.option_flags import API_ONLY, NOT_FLAGS, flag, options_from_args
from neuron_atlas_client.options import PipelineOptions


def run_args(*flags: str) -> PipelineOptions:
    return options_from_args(build_parser().parse_args(["run", "images", "--out", "out", *flags]))


def test_every_option_has_a_flag_with_its_description_and_default() -> None:
    help_text = build_parser()._subparsers._group_actions[0].choices["run"].format_help()  # type: ignore[union-attr]
    squashed = " ".join(help_text.split())
    for name, field in PipelineOptions.model_fields.items():
        if name in API_ONLY:
            assert flag(name) not in help_text  # a registered model exists only in the suite
            continue
        if name in NOT_FLAGS:  # `models`: the run's own model flags and --also-model name them
            assert f"{flag(name)} " not in help_text and "--also-model SPEC" in help_text
            continue
        assert flag(name) in help_text
        assert field.description and " ".join(field.description.split()) in squashed, name
    assert "(> 0.0, ≤ 1.0) (default: 0.1)" in squashed  # --top-fraction's bounds and default


def test_no_flags_give_the_models_defaults_and_flags_override_them() -> None:
    assert run_args() == PipelineOptions()
    options = run_args("--mc-samples", "0", "--layers", "layer3,layer4", "--ranking", "global")
    assert options.mc_samples == 0 and options.layers == ("layer3", "layer4") and options.ranking == "global"
    assert run_args("--allow-random-weights").allow_random_weights is True


def test_a_value_out_of_bounds_names_its_flag() -> None:
    with pytest.raises(InputError, match="--top-fraction: Input should be less than or equal to 1"):
        run_args("--top-fraction", "1.5")


def test_preprocessing_is_json_and_bad_json_says_how_it_looks() -> None:
    options = run_args("--preprocessing", '{"input_size": 160, "resize": 176, "interpolation": "bicubic"}')
    assert options.preprocessing is not None and options.preprocessing.input_size == 160
    with pytest.raises(InputError, match="--preprocessing is not JSON"):
        run_args("--preprocessing", "input_size=160")
    with pytest.raises(InputError, match="resize"):
        run_args("--preprocessing", '{"input_size": 224, "resize": 200}')


def test_also_model_adds_models_that_share_the_runs_model_flags() -> None:
    options = run_args(
        "--weights=/w/v3.safetensors",
        "--layers=layer3,layer4",
        "--also-model=resnet18,weights=/w/v4.safetensors",
        "--also-model=resnet34,layers=layer4,key=big",
    )
    assert [m.resolved_key for m in options.target_models()] == ["v3", "v4", "big"]
    first, second, third = (options.for_model(m) for m in options.target_models())
    assert (first.weights, second.weights, third.weights) == ("/w/v3.safetensors", "/w/v4.safetensors", None)
    assert first.layers == second.layers == ("layer3", "layer4") and third.layers == ("layer4",)
    assert third.model == "resnet34" and first.models is None
