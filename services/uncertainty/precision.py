"""The number format of the uncertainty stage's extra model passes (dropout, test-time
augmentation, ablation, pruning).

These passes repeat the target model many times over, and each only reads what a pass *changes*
(which neurons a dropout mask or an augmentation moves, how far a logit falls when a set of
neurons is zeroed): bfloat16 autocast keeps float32's range and rounds each product to about
three significant digits. On a CPU with bfloat16 instructions (AMX or AVX-512 BF16) it runs a
ResNet18 pass 2.5-4.3x faster here; on a CUDA GPU with bfloat16 it is the usual fast path.
The activation pass that defines the groups is never run in reduced precision.

`auto` picks bfloat16 only where the device computes it natively: elsewhere PyTorch emulates it,
which is slower than float32. The format used is recorded in `uncertainty.method`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import nn

from neuron_atlas_client.options import PassPrecision

log = logging.getLogger(__name__)


def native_bfloat16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 in hardware (else autocast would emulate it)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    return False


def pass_dtype(choice: PassPrecision, device: torch.device) -> torch.dtype:
    if choice == "float32":
        return torch.float32
    if choice == "bfloat16" or native_bfloat16(device):
        return torch.bfloat16
    return torch.float32


def runs_in(module: nn.Module, device: torch.device, dtype: torch.dtype, input_size: int) -> bool:
    """Whether `module` runs a one-image pass in `dtype`: a user's model may hold an operation
    without a bfloat16 kernel on this device, which only a pass finds out."""
    if dtype == torch.float32:
        return True
    try:
        with torch.inference_mode(), autocast(device, dtype):
            module(torch.zeros(1, 3, input_size, input_size, device=device))
    except (RuntimeError, NotImplementedError, TypeError) as exc:
        log.warning("model passes in float32: the model does not run in %s here (%s)", dtype, exc)
        return False
    return True


def dtype_name(dtype: torch.dtype) -> Literal["float32", "bfloat16"]:
    return "bfloat16" if dtype == torch.bfloat16 else "float32"


@contextmanager
def autocast(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """The model's matrix products and convolutions in `dtype` inside this block (float32: as is)."""
    if dtype == torch.float32:
        yield
        return
    with torch.autocast(device.type, dtype=dtype):
        yield
