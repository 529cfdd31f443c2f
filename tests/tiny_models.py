"""Tiny models built from configs into a temp dir, loaded through the real loading code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "blue", "circle", "square", "on", "the"]


def save_tiny_blip(folder: Path) -> Path:
    """A 2-layer BLIP (random weights) with its processor, saved like a hub checkpoint."""
    import torch
    from transformers import (
        BertTokenizerFast,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    torch.manual_seed(0)
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(WORDS)}, do_lower_case=True)
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer
    )
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    config = BlipConfig(
        text_config=dict(
            small,
            vocab_size=len(WORDS),
            max_position_embeddings=64,
            bos_token_id=2,
            sep_token_id=3,
            pad_token_id=0,
            eos_token_id=3,
        ),
        vision_config=dict(small, image_size=32, patch_size=8),
        projection_dim=32,
    )
    BlipForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


# --- A target model with planted ground truth ------------------------------------------------
# Images of concept c (0..3) have quadrant c bright. PlantedNet's neurons, by construction:
#   layer1 (64 channels): 3c..3c+2 detect concept c; 12, 13 are generic (always among the most
#     active); 14..63 are random (read only pixel noise that carries no concept).
#   layer2 (48 channels): 3c..3c+2 each sum concept c's layer1 detectors; 12 sums the generic
#     ones; 13..47 are random mixes of layer1's random channels.
#   head: class c reads layer2 channels 3c..3c+2 only (a logit of about 3).
# Each concept is spread over three neurons per layer, so a random set rarely holds all of them.
# With top_fraction 0.125 (8 of layer1, 6 of layer2 active per image) and min_support 0.5, the
# level-1 group of concept c's cluster is its 6 detectors plus the 3 generic neurons.

PLANTED_CONCEPTS = 4
PLANTED_LAYERS = (("layer1", 64, 0), ("layer2", 48, 64))
PLANTED_NEURONS = sum(channels for _, channels, _ in PLANTED_LAYERS)


def planted_layers() -> list[Any]:
    """The planted model's read layers as the neuron axis sees them (LayerInfo)."""
    from neuron_core.neuron_axis import LayerInfo

    return [LayerInfo(name, channels, offset) for name, channels, offset in PLANTED_LAYERS]


PLANTED_TOP_FRACTION = 0.125
PLANTED_GENERIC = (12, 13, 64 + 12)  # neuron indices over both layers (layer2 starts at 64)


def planted_detectors(concept: int) -> set[int]:
    """The selective neurons planted for `concept` (neuron indices over both layers)."""
    return {3 * concept + i for i in range(3)} | {64 + 3 * concept + i for i in range(3)}


def planted_group(concept: int) -> set[int]:
    """The level-1 group the group rule must find for `concept`: detectors plus generic ones."""
    return planted_detectors(concept) | set(PLANTED_GENERIC)


def planted_images(per_concept: int, seed: int = 0, size: int = 64) -> tuple[list[Any], np.ndarray]:
    """`per_concept` noisy images of each concept (quadrant c bright) and their concept labels."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images, labels = [], []
    half = size // 2
    for concept in range(PLANTED_CONCEPTS):
        for _ in range(per_concept):
            pixels = 0.3 + 0.15 * rng.standard_normal((size, size, 3))
            row, col = divmod(concept, 2)
            pixels[row * half : (row + 1) * half, col * half : (col + 1) * half] += 0.5
            images.append(Image.fromarray((pixels.clip(0, 1) * 255).astype(np.uint8)))
            labels.append(concept)
    return images, np.array(labels)


def planted_net(planted: bool = True, seed: int = 0) -> Any:
    """PlantedNet (see above) in eval mode; `planted=False` gives the null model: every channel
    random, so no neuron carries a concept."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Features(nn.Module):
        """layer1: concept, generic and random channels from quadrant means and pixel noise."""

        def __init__(self) -> None:
            super().__init__()
            generator = torch.Generator().manual_seed(seed)
            random = torch.randn(64, 192, generator=generator)
            self.register_buffer("random", random / random.norm(dim=1, keepdim=True))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            grey = x.mean(dim=1, keepdim=True)
            quadrants = F.adaptive_avg_pool2d(grey, 2)  # (b, 1, 2, 2), row-major = concept order
            concept = (quadrants - quadrants.mean(dim=(2, 3), keepdim=True)).flatten(1)  # (b, 4)
            fine = F.adaptive_avg_pool2d(x, 8)
            # the noise: fine structure minus its quadrant's mean, so it carries no concept
            residual = (fine - F.interpolate(F.adaptive_avg_pool2d(fine, 2), size=8)).flatten(1)
            residual = residual / (residual.std(dim=1, keepdim=True) + 1e-6)
            out = residual @ self.random.T  # (b, 64), about N(0, 1) per channel
            if planted:
                detectors = 3.0 * concept.repeat_interleave(3, dim=1)  # 3c..3c+2 <- concept c
                generic = 5.0 + 0.1 * out[:, 12:14]
                out = torch.cat([detectors, generic, out[:, 14:]], dim=1)
            return out[:, :, None, None]

    class PlantedNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer1 = Features()
            self.layer2 = nn.Conv2d(64, 48, 1, bias=False)
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(48, PLANTED_CONCEPTS))
            generator = torch.Generator().manual_seed(seed + 1)
            with torch.no_grad():
                weight = torch.zeros(48, 64)
                mix = torch.randn(48, 50, generator=generator)
                weight[:, 14:] = mix / mix.norm(dim=1, keepdim=True)  # mixes of random channels
                head = self.head[1]
                head.weight.zero_()
                head.bias.zero_()
                if planted:
                    weight[:13] = 0.0
                    for c in range(PLANTED_CONCEPTS):
                        weight[3 * c : 3 * c + 3, 3 * c : 3 * c + 3] = 1.0
                        # logit ~3 for the true class: confident, not certain (entropy > 0)
                        head.weight[c, 3 * c : 3 * c + 3] = 1.0 / 18.0
                    weight[12, 12:14] = 1.0
                else:
                    head.weight.copy_(torch.randn(PLANTED_CONCEPTS, 48, generator=generator) / 7.0)
                self.layer2.weight.copy_(weight[:, :, None, None])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.layer2(self.layer1(x)))

    return PlantedNet().eval()


# A ResNet18 with planted colour detectors, for the model registry's tests: a 6-class head (the
# sample's six concepts, so the head's size is read off the file) and, in `conv1`, three channels
# per background of the sample (sand, night sky, grass) whose weights point along that
# background's colour, so they fire for its images. Every other weight is small and random.
PLANTED_BACKGROUNDS = {"sand": (225, 205, 160), "night sky": (15, 15, 45), "grass": (60, 120, 50)}


def planted_colour_detectors(background: str) -> set[int]:
    """The conv1 channels planted for `background`."""
    index = list(PLANTED_BACKGROUNDS).index(background)
    return {3 * index + i for i in range(3)}


def save_planted_resnet18(path: Path, seed: int = 0) -> Path:
    import torch
    import torchvision.models as tvm
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = tvm.resnet18(weights=None, num_classes=6)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    colours = np.array([(np.array(c) / 255.0 - mean) / std for c in PLANTED_BACKGROUNDS.values()])
    directions = colours - colours.mean(axis=0)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    with torch.no_grad():
        weight = model.conv1.weight
        weight.mul_(0.01)
        for b, direction in enumerate(directions):
            for i in range(3):
                weight[3 * b + i] = torch.tensor(direction, dtype=weight.dtype).view(3, 1, 1) / 49.0
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


# --- A model whose right answers depend on its input size -------------------------------------
# Texture classes (stripes of four orientations, two pixels wide) at 32 px, and a ResNet18 with
# random convolutions whose head is fitted (least squares on its pooled features) to those
# images at 32 px with ImageNet normalisation: it recognises them at 32 px and at no other size
# (at ImageNet's 256/224 every image falls to one class). The input check must say so.

SIZED_CLASSES = 4
SIZED_INPUT = 32


def sized_images(per_class: int, seed: int = 0, size: int = SIZED_INPUT) -> tuple[list[Any], np.ndarray]:
    """`per_class` noisy striped images of each class (horizontal, vertical, two diagonals)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    stripes = [(y // 2) % 2, (x // 2) % 2, ((x + y) // 2) % 2, ((x - y) // 2) % 2]
    images, labels = [], []
    for label, pattern in enumerate(stripes):
        for _ in range(per_class):
            grey = 0.5 + 0.35 * (pattern - 0.5) * 1.2 + 0.08 * rng.standard_normal((size, size))
            rgb = np.stack([grey, 0.9 * grey + 0.05, 1 - grey], axis=-1)
            images.append(Image.fromarray((rgb.clip(0, 1) * 255).astype(np.uint8)))
            labels.append(label)
    return images, np.array(labels)


def save_sized_resnet18(path: Path, images: list[Any], labels: np.ndarray, seed: int = 0) -> Path:
    """A 4-class ResNet18 (random convolutions) whose head is fitted to `images` at 32 px."""
    import torch
    import torchvision.models as tvm
    from safetensors.torch import save_file

    from neuron_atlas_client.contracts.models import Preprocessing
    from neuron_core.hooks import preprocess

    torch.manual_seed(seed)
    model = tvm.resnet18(weights=None, num_classes=SIZED_CLASSES).eval()
    features: list[Any] = []
    handle = model.fc.register_forward_hook(lambda _m, inputs, _o: features.append(inputs[0]))
    with torch.no_grad():
        model(preprocess(images, Preprocessing(input_size=SIZED_INPUT, resize=SIZED_INPUT)))
    handle.remove()
    pooled = torch.cat([features[0].double(), torch.ones(len(images), 1, dtype=torch.float64)], dim=1)
    targets = 2 * torch.nn.functional.one_hot(torch.as_tensor(labels), SIZED_CLASSES).double() - 1
    ridge = 1e-3 * torch.eye(pooled.shape[1], dtype=torch.float64)
    head = torch.linalg.solve(pooled.T @ pooled + ridge, pooled.T @ targets)
    with torch.no_grad():
        model.fc.weight.copy_(head[:-1].T.float())
        model.fc.bias.copy_(head[-1].float())
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


SIZED_STRIPES = ("horizontal", "vertical", "diagonal", "antidiagonal")


def write_striped_collection(root: Path, per_class: int = 12) -> Path:
    """`root/images/` (PNGs, captions in metadata.csv), `root/labels.json` (file name -> class
    index, for --labels or the API spec's labels) and `root/model.safetensors` (fitted at 32 px)."""
    import json

    (root / "images").mkdir(parents=True, exist_ok=True)
    images, labels = sized_images(per_class)
    rows, classes = ["file_name,caption"], {}
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        name = f"{SIZED_STRIPES[label]}-{i:02d}.png"
        image.save(root / "images" / name)
        rows.append(f"{name},a photo of {SIZED_STRIPES[label]} stripes")
        classes[name] = int(label)
    (root / "images" / "metadata.csv").write_text("\n".join(rows) + "\n")
    (root / "labels.json").write_text(json.dumps(classes))
    save_sized_resnet18(root / "model.safetensors", images, labels)
    return root


# A tiny vision transformer shape: its read layers output tokens (images, tokens, channels), as a
# ViT's blocks do, with the channels on the last axis. 32 px in 8 px patches gives 16 tokens of
# 16 channels: tokens == channels, so a mask put on the wrong axis broadcasts and goes unnoticed.
TOKEN_CHANNELS = 16


def token_net(seed: int = 0) -> Any:
    """`patch` (a conv, not read), then `block1` and `block2` ((N, 16, 16): tokens, channels),
    each a per-token linear map with a residual, then the mean token to 3 classes."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mix = nn.Linear(TOKEN_CHANNELS, TOKEN_CHANNELS)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return tokens + torch.relu(self.mix(tokens))

    class TokenNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patch = nn.Conv2d(3, TOKEN_CHANNELS, 8, stride=8)
            self.block1 = Block()
            self.block2 = Block()
            self.head = nn.Linear(TOKEN_CHANNELS, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            tokens = self.patch(x).flatten(2).transpose(1, 2)  # (N, tokens, channels)
            return self.head(self.block2(self.block1(tokens)).mean(dim=1))

    torch.manual_seed(seed)
    return TokenNet().eval()
