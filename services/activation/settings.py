"""Settings of the activation workers (`ACTIVATION_` + name)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ModelWorkerSettings


class ActivationSettings(ModelWorkerSettings):
    model_config = SettingsConfigDict(env_prefix="ACTIVATION_", env_nested_delimiter="__", extra="ignore")
