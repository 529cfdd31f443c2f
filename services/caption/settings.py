"""Settings of the caption workers (`CAPTION_` + name)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ModelWorkerSettings


class CaptionSettings(ModelWorkerSettings):
    model_config = SettingsConfigDict(env_prefix="CAPTION_", env_nested_delimiter="__", extra="ignore")
