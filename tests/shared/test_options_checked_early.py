"""Options that a worker would fail on are refused where they are given, with the field named."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from neuron_atlas_client.errors import InputError, ModelLoadError
from neuron_atlas_client.options import PipelineOptions
from shared.models.devices import resolve_device
from shared.models.sentence_embedder import Embedder


@pytest.mark.parametrize(
    ("options", "field"),
    [({"seed": 2**64}, "seed"), ({"device": "meta"}, "device"), ({"layers": []}, "layers")],
)
def test_bad_options_name_their_field(options: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        PipelineOptions(**options)  # type: ignore[arg-type]
    assert caught.value.errors()[0]["loc"] == (field,)


def test_the_largest_seed_torch_takes_is_accepted() -> None:
    seed = PipelineOptions(seed=2**63 - 1).seed
    torch.Generator().manual_seed(seed)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a host without a GPU")
def test_a_missing_gpu_is_named_as_such_by_every_loader() -> None:
    with pytest.raises(InputError, match="no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device(None) == "cpu" and resolve_device("cpu") == "cpu"
    with pytest.raises(InputError, match="no CUDA GPU") as caught:
        Embedder(device="cuda").load()
    assert not isinstance(caught.value, ModelLoadError)  # not blamed on the sentence embedder
