"""Settings of the embed_cluster workers (`EMBED_CLUSTER_` + name)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class EmbedClusterSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMBED_CLUSTER_", env_nested_delimiter="__", extra="ignore")

    device: str | None = Field(None, description="torch device when the job names none.")
