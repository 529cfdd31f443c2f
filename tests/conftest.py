"""Fixtures shared by every test: no hub access, generated sample images, tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never reach for a model hub: every model they use is built here or shipped by a package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NEURON_ATLAS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's generated collection: 6 concepts x 4 images, captions in metadata.csv."""
    from neuron_atlas.sample import make_sample

    return make_sample(tmp_path_factory.mktemp("sample") / "images", per_concept=4, size=96)
