"""Image captions from BLIP (transformers): batched, greedy, bounded length."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from neuron_atlas_client.errors import ModelLoadError
from shared.models.hub import downloads_allowed

log = logging.getLogger(__name__)


@dataclass
class CaptionModel:
    processor: Any
    model: Any


def load_blip(model_id: str, cache_dir: Path | None, device: torch.device) -> CaptionModel:
    """BLIP processor and model from a local folder or the hub cache (downloads where allowed)."""
    # transformers: seconds of import; only a run that captions loads it (provided captions do not)
    from transformers import BlipForConditionalGeneration, BlipProcessor
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress display is the only one
    local_only = not downloads_allowed() or Path(model_id).is_dir()
    try:
        processor = BlipProcessor.from_pretrained(model_id, cache_dir=cache_dir, local_files_only=local_only)
        model: Any = BlipForConditionalGeneration.from_pretrained(
            model_id, cache_dir=cache_dir, local_files_only=local_only
        )
    except Exception as exc:  # OSError, hub and HTTP errors: all mean the model is not here
        where = model_id if Path(model_id).is_dir() else f"the hub cache ({cache_dir or 'default'})"
        raise ModelLoadError(
            f"Could not load captioning model {model_id!r} from {where} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}).",
            "Run once with hub access to cache it, pass --caption-model with a local BLIP folder, "
            "or bring captions (metadata.csv / metadata.jsonl, or --captions FILE).",
        ) from None
    model.to(device)
    return CaptionModel(processor, model.eval())


class Captioner:
    """BLIP captioner: loads once, on first use, under a lock; the loader is injectable."""

    def __init__(
        self,
        model_id: str,
        device: torch.device,
        cache_dir: Path | None = None,
        loader: Callable[[str, Path | None, torch.device], CaptionModel] = load_blip,
    ) -> None:
        self.model_id = model_id
        self.device = device
        self.cache_dir = cache_dir
        self._loader = loader
        self._loaded: CaptionModel | None = None
        self._lock = threading.Lock()

    def load(self) -> CaptionModel:
        with self._lock:
            if self._loaded is None:
                self._loaded = self._loader(self.model_id, self.cache_dir, self.device)
            return self._loaded

    @torch.inference_mode()
    def caption(
        self, images: Sequence[Image.Image], batch_size: int = 16, max_new_tokens: int = 30
    ) -> list[str]:
        """One caption per image, greedy decoding, at most `max_new_tokens` new tokens."""
        loaded = self.load()
        captions: list[str] = []
        for start in range(0, len(images), batch_size):
            batch = list(images[start : start + batch_size])
            inputs = loaded.processor(images=batch, return_tensors="pt").to(self.device)
            tokens = loaded.model.generate(
                **inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1
            )
            texts = loaded.processor.batch_decode(tokens, skip_special_tokens=True)
            captions.extend(text.strip() for text in texts)
        return captions
