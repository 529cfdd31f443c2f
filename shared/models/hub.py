"""Whether models may be downloaded: off when the user, or the hub convention, says offline; and
whether the hubs can be reached at all, asked once with a short timeout before any download (the
hub client otherwise retries each file for minutes)."""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

OFFLINE_VARIABLES = ("NEURON_ATLAS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
HF_DEFAULT_ENDPOINT = "https://huggingface.co"
TORCHVISION_WEIGHTS = "https://download.pytorch.org"


def downloads_allowed() -> bool:
    return not any(os.environ.get(var, "").lower() in ("1", "true", "yes") for var in OFFLINE_VARIABLES)


def hf_endpoint() -> str:
    """The Hugging Face hub the hub client talks to (HF_ENDPOINT, as it reads it)."""
    return os.environ.get("HF_ENDPOINT", HF_DEFAULT_ENDPOINT).rstrip("/")


def unreachable(url: str, timeout_s: float) -> str | None:
    """Why `url`'s server cannot be reached (no address, refused, timed out), or None when it
    answers at all: any HTTP status, 404 included, means it is there."""
    try:
        request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "neuron-atlas"})
        with urllib.request.urlopen(request, timeout=timeout_s):
            return None
    except urllib.error.HTTPError:
        return None
    except urllib.error.URLError as exc:
        reason = exc.reason
        return reason.strerror or str(reason) if isinstance(reason, OSError) else str(reason)
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def unreachable_hubs(urls: list[str], timeout_s: float) -> dict[str, str]:
    """Each of `urls` that cannot be reached, with why; asked side by side."""
    with ThreadPoolExecutor(max_workers=max(1, len(urls))) as pool:
        reasons = dict(zip(urls, pool.map(lambda u: unreachable(u, timeout_s), urls), strict=True))
    return {url: reason for url, reason in reasons.items() if reason is not None}


def log_through_root() -> None:
    """huggingface_hub gives its logger a stderr handler of its own and lets records propagate
    to the root logger too, so each of its warnings was printed twice: keep only the root's."""
    # huggingface_hub (it adds its handler on import): only runs that load a model call this, not
    # `neuron-atlas --help`, which imports this module too
    import huggingface_hub.utils.logging  # noqa: F401

    logger = logging.getLogger("huggingface_hub")
    if logger.propagate and logging.getLogger().handlers:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
