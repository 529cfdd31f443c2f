"""The target model's inputs for rows of the job, decoded once per uncertainty run.

The stochastic passes, every causal check and the pruning report all read images; before this
cache each image was decoded about four times per run. Inputs are kept as the transform's uint8
crops (224 x 224 x 3 = 147 kB an image) up to a memory budget: 1 GiB holds about 7,000 images.
Rows past the budget are decoded again whenever they are asked for, so memory stays bounded on
any job size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

from neuron_atlas_client.contracts.models import IMAGENET_EVAL, Preprocessing
from neuron_core.hooks import crops, normalise
from shared.pipeline.ingest import decode_threads

ImageSource = Callable[[Sequence[int]], list[Image.Image]]
"""Decoded images for row indices of the job (the order of its image ids)."""
InputSource = Callable[[Sequence[int]], torch.Tensor]
"""The target model's normalised input batch for row indices of the job (`ModelInputs`)."""

DEFAULT_BUDGET_BYTES = 2**30


class ModelInputs:
    """`inputs(rows)` is the normalised batch for those rows, on `device`."""

    def __init__(
        self,
        read_images: ImageSource,
        device: torch.device,
        budget_bytes: int = DEFAULT_BUDGET_BYTES,
        prep: Preprocessing = IMAGENET_EVAL,
    ) -> None:
        self.read_images = read_images
        self.prep = prep
        self.device = device
        self.budget_bytes = budget_bytes
        self._crops: dict[int, np.ndarray] = {}
        self.decoded = 0  # images decoded so far, repeats included (the benchmark reports it)

    def __call__(self, rows: Sequence[int]) -> torch.Tensor:
        rows = [int(r) for r in rows]
        missing = sorted({r for r in rows if r not in self._crops})
        fresh = dict(zip(missing, self._decode(missing), strict=True)) if missing else {}
        batch = np.stack([self._crops[r] if r in self._crops else fresh[r] for r in rows]) if rows else None
        for row, crop in fresh.items():
            if (len(self._crops) + 1) * crop.nbytes > self.budget_bytes:
                break
            self._crops[row] = crop
        if batch is None:
            return torch.empty(0, 3, 0, 0, device=self.device)
        return normalise(batch, self.prep).to(self.device)

    def _decode(self, rows: list[int]) -> np.ndarray:
        """Decode and crop on one thread per core: Pillow releases the GIL in both."""
        self.decoded += len(rows)
        chunks = [rows[i : i + 8] for i in range(0, len(rows), 8)]
        with ThreadPoolExecutor(decode_threads()) as pool:
            parts = list(pool.map(lambda chunk: crops(self.read_images(chunk), self.prep), chunks))
        return np.concatenate(parts)
