from pathlib import Path

import pytest
import torch
from PIL import Image

from neuron_atlas_client.errors import ModelLoadError
from services.caption.captioning import Captioner, load_blip
from services.caption.stage import caption_rows
from tests.tiny_models import WORDS, save_tiny_blip


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_blip(tmp_path_factory.mktemp("blip"))


def images(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (40 + i, 30), (20 * i, 0, 0)) for i in range(n)]


def test_tiny_blip_captions_every_image_in_batches_within_the_token_bound(tiny_blip):
    captioner = Captioner(str(tiny_blip), torch.device("cpu"))
    captions = captioner.caption(images(5), batch_size=2, max_new_tokens=4)
    assert len(captions) == 5
    vocabulary = set(WORDS)
    for caption in captions:
        assert 0 < len(caption.split()) <= 4
        assert set(caption.split()) <= vocabulary
    # greedy decoding: the same images give the same captions, whatever the batching
    assert captioner.caption(images(5), batch_size=5, max_new_tokens=4) == captions


def test_loader_runs_once_however_often_caption_is_called(tiny_blip):
    calls = []

    def loader(model_id, cache_dir, device):
        calls.append(model_id)
        return load_blip(model_id, cache_dir, device)

    captioner = Captioner(str(tiny_blip), torch.device("cpu"), loader=loader)
    captioner.caption(images(1))
    captioner.caption(images(1))
    assert calls == [str(tiny_blip)]


def test_a_missing_captioning_model_says_where_it_looked_and_what_to_do(tmp_path):
    with pytest.raises(ModelLoadError) as err:
        load_blip("Salesforce/blip-image-captioning-base", tmp_path, torch.device("cpu"))
    assert "blip-image-captioning-base" in err.value.problem
    assert "metadata.csv" in err.value.fix and "--caption-model" in err.value.fix


def test_captions_the_submission_brings_win_over_the_model(tiny_blip):
    captioner = Captioner(str(tiny_blip), torch.device("cpu"))
    rows = caption_rows(
        ["i0", "i1", "i2"],
        ["a.png", "b.png", "c.png"],
        images(3),
        {"b.png": "my own caption"},
        captioner,
        8,
        5,
    )
    assert [r["source"] for r in rows] == ["model", "provided", "model"]
    assert rows[1]["caption"] == "my own caption"
    assert rows[0]["caption"] == captioner.caption(images(1), 8, 5)[0]
