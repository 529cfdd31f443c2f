"""Settings of the uncertainty workers (`UNCERTAINTY_` + name)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ModelWorkerSettings


class UncertaintySettings(ModelWorkerSettings):
    """The uncertainty workers load the job's target model too (MC dropout, ablations)."""

    model_config = SettingsConfigDict(env_prefix="UNCERTAINTY_", env_nested_delimiter="__", extra="ignore")
