"""Which torch device a worker or the embedded run uses, checked before any model loads.

A job that asks for a device the host lacks gets an error that names the device and what the
host has, from whichever stage looks first; not a failure inside a model loader that blames the
model. torch is imported inside the function: the gateway imports `shared` and never torch."""

from __future__ import annotations

from neuron_atlas_client.errors import InputError


def resolve_device(requested: str | None) -> str:
    """`requested` if this host has it (default: cuda when present, else cpu)."""
    import torch  # torch: the gateway imports `shared` and must not load it

    if not requested:
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind, _, index = requested.partition(":")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(
                f"The job asks for device {requested!r}, but this host has no CUDA GPU.",
                "Leave device unset to use what the workers have, or send the job where GPU workers run.",
            )
        if index and int(index) >= count:
            raise InputError(
                f"The job asks for device {requested!r}, but this host has {count} CUDA GPU(s).",
                f"Use cuda:0 to cuda:{count - 1}, or leave device unset.",
            )
    elif kind == "mps" and not torch.backends.mps.is_available():
        raise InputError(
            f"The job asks for device {requested!r}, but this host has no Apple GPU.",
            "Leave device unset, or choose cpu.",
        )
    elif kind not in ("cpu", "cuda", "mps"):
        raise InputError(f"Unknown device {requested!r}.", "Choose cpu, cuda, cuda:N or mps.")
    return requested
