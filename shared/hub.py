"""Whether models may be downloaded: off when the user, or the hub convention, says offline."""

from __future__ import annotations

import os

OFFLINE_VARIABLES = ("NEURON_ATLAS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def downloads_allowed() -> bool:
    return not any(os.environ.get(var, "").lower() in ("1", "true", "yes") for var in OFFLINE_VARIABLES)
