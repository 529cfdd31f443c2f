"""Settings of the labelling service: which OpenAI-compatible endpoint writes labels, and how.

Read from the environment with the prefix `NEURON_ATLAS_LLM__` (e.g. `NEURON_ATLAS_LLM__BASE_URL`,
`NEURON_ATLAS_LLM__API_KEY`, `NEURON_ATLAS_LLM__MODEL`). With neither a base URL nor an API key
the offline labeller writes every label.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "NEURON_ATLAS_LLM__"


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/neuron-atlas/labels`, else `~/.cache/neuron-atlas/labels`."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "neuron-atlas" / "labels"


class LabelSettings(BaseSettings):
    """How labels are written. Not part of the job's options: the key is a secret and the
    endpoint is the deployment's business; the model and prompt version are recorded with
    every label instead."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    base_url: str | None = Field(None, description="OpenAI-compatible endpoint, e.g. http://host:8000/v1.")
    api_key: SecretStr | None = Field(None, description="Sent as the bearer token.")
    organization: str | None = None
    model: str = "gpt-4o-mini"
    offline: bool = Field(False, description="Write offline labels even when an endpoint is set.")
    strict: bool = Field(False, description="Fail the job when the endpoint fails, not fall back.")
    # The client's defaults (600 s, 2 retries) would hold a queue worker for half an hour.
    timeout: float = Field(30.0, gt=0, description="Seconds one request may take.")
    max_retries: int = Field(2, ge=0, le=10, description="Retries after a 429, 5xx or timeout.")
    backoff_base: float = Field(0.5, ge=0, description="First backoff in seconds, doubled per retry.")
    max_retry_wait: float = Field(
        30.0, ge=0, description="Longest wait between retries; a longer Retry-After ends the retries."
    )
    outage_window_s: float = Field(
        300.0,
        ge=0,
        description="Suite only: an endpoint that gives no answer at all is waited out this long "
        "(the labelling task tried again after 5, 10, 20, 30 ... s), then the job fails.",
    )
    concurrency: int = Field(4, ge=1, le=256, description="Requests in flight at once per worker.")
    max_consecutive_failures: int = Field(
        3, ge=1, description="After this many failed clusters in a row, stop calling the endpoint."
    )
    response_format: Literal["json_schema", "json_object"] = Field(
        "json_schema", description="json_object for servers without structured outputs."
    )
    prompt_version: str = "v1"
    caption_token_budget: int = Field(1200, ge=50, description="Caption tokens sent for one level-1 cluster.")
    cache: bool = Field(True, description="Reuse earlier answers for the same model, prompt and input.")
    cache_dir: Path | None = Field(None, description="Embedded response cache; default ~/.cache/...")
    max_tokens_per_job: int | None = Field(
        None,
        ge=0,
        description="Prompt + completion tokens one labelling run may spend; the run fails "
        "(llm-budget-exceeded) rather than pass it. The suite sets it per job from the tenant's quota.",
    )
    prompt_price_per_million: float | None = Field(None, ge=0, description="USD per 1M prompt tokens.")
    completion_price_per_million: float | None = Field(None, ge=0, description="USD per 1M output tokens.")

    @property
    def uses_llm(self) -> bool:
        """An endpoint is configured and not switched off."""
        return not self.offline and (self.base_url is not None or self.api_key is not None)

    @property
    def source_name(self) -> str:
        """What `label_source` says for labels this endpoint wrote."""
        return f"llm:{self.model}@{self.prompt_version}"


@lru_cache(maxsize=1)
def get_settings() -> LabelSettings:
    """Settings from the environment, read once; tests call `get_settings.cache_clear()`."""
    return LabelSettings()
