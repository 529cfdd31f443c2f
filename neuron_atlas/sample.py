"""A generated sample collection: drawn scenes with captions, so the demo needs no download.

Six concepts (shape x colour on a background) with varied position, size and noise; captions
in `metadata.csv`, the imagefolder convention, so the run needs no captioning model.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CONCEPTS = (
    ("circle", "red", (210, 40, 40), "sand", (225, 205, 160)),
    ("circle", "blue", (40, 70, 210), "sand", (225, 205, 160)),
    ("square", "red", (210, 40, 40), "night sky", (15, 15, 45)),
    ("square", "green", (40, 170, 60), "night sky", (15, 15, 45)),
    ("triangle", "yellow", (235, 210, 40), "grass", (60, 120, 50)),
    ("stripes", "white", (245, 245, 245), "grass", (60, 120, 50)),
)
PHRASES = ("a {c} {s} on {b}", "a photo of a {c} {s} over {b}", "one {c} {s} with {b} behind it")


def _draw(
    shape: str,
    colour: tuple[int, int, int],
    background: tuple[int, int, int],
    rng: np.random.Generator,
    size: int,
) -> Image.Image:
    base = np.clip(np.array(background) + rng.normal(0, 12, (size, size, 3)), 0, 255)
    image = Image.fromarray(base.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    r = int(rng.uniform(0.18, 0.32) * size)
    cx, cy = (int(rng.uniform(r, size - r)) for _ in range(2))
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    else:
        step = max(4, size // 12)
        for x in range(0, size, 2 * step):
            draw.rectangle((x, 0, x + step - 1, size), fill=colour)
    return image


def make_sample(folder: Path, per_concept: int = 8, size: int = 160, seed: int = 0) -> Path:
    """Write `len(CONCEPTS) * per_concept` PNG images and `metadata.csv` into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for k, (shape, colour_name, colour, background_name, background) in enumerate(CONCEPTS):
        for i in range(per_concept):
            name = f"{shape}-{colour_name}-{i:02d}.png"
            _draw(shape, colour, background, rng, size).save(folder / name)
            phrase = PHRASES[(i + k) % len(PHRASES)]
            rows.append((name, phrase.format(c=colour_name, s=shape, b=background_name)))
    with (folder / "metadata.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("file_name", "caption"))
        writer.writerows(rows)
    return folder
