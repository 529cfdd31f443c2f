"""Versioned prompts: `prompts/<version>/` holds the texts, the sampling parameters and the
response schemas. A change to any of them is a new version, so cached answers never mix."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from neuron_atlas_client.errors import InputError


@dataclass(frozen=True)
class PromptSet:
    version: str
    system: str
    level1: str
    parent: str
    temperature: float
    max_tokens: int
    schemas: dict[str, dict[str, Any]]


# Beside this module (package data); `services` is a namespace package, so a plain path is the
# one that resolves the same in a checkout, an editable install and a wheel.
PROMPTS_DIR = Path(__file__).parent / "prompts"


def available_versions() -> list[str]:
    return sorted(p.name for p in PROMPTS_DIR.iterdir() if p.is_dir() and not p.name.startswith("_"))


@lru_cache(maxsize=8)
def load_prompts(version: str) -> PromptSet:
    """The prompt set of `version` (e.g. "v1"), shipped as package data."""
    if version not in available_versions():
        raise InputError(
            f"Unknown prompt version {version!r}.",
            f"Use one of: {', '.join(available_versions())}.",
        )
    folder = PROMPTS_DIR / version
    params = json.loads(folder.joinpath("params.json").read_text())
    return PromptSet(
        version=version,
        system=folder.joinpath("system.txt").read_text().strip(),
        level1=folder.joinpath("level1.txt").read_text().strip(),
        parent=folder.joinpath("parent.txt").read_text().strip(),
        temperature=float(params["temperature"]),
        max_tokens=int(params["max_tokens"]),
        schemas=params["schemas"],
    )
