"""Problem details (RFC 9457), as the gateway answers errors and as a failed job records them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

TYPE_PREFIX = "urn:neuron-atlas:problem:"


class ProblemDetails(BaseModel):
    """`application/problem+json`: `type`, `title`, `status`, `detail`, `instance`, plus `fix`
    (what the caller can do) and, for invalid input, `errors`."""

    model_config = ConfigDict(extra="allow")  # RFC 9457 extension members

    type: str = Field(description=f"{TYPE_PREFIX}<kind>")
    title: str
    status: int | None = Field(None, description="HTTP status; absent on a job's recorded error.")
    detail: str | None = None
    instance: str | None = None
    fix: str | None = Field(None, description="What to do about it.")
    errors: list[dict[str, Any]] | None = Field(None, description="Invalid fields: loc and msg.")

    def body(self) -> dict[str, Any]:
        """The JSON body: members without a value are left out."""
        return self.model_dump(mode="json", exclude_none=True)

    @classmethod
    def of(cls, kind: str, title: str, detail: str = "", fix: str = "", **extra: Any) -> ProblemDetails:
        """A problem of kind `kind` (the suffix of its `type` URN)."""
        return cls(type=TYPE_PREFIX + kind, title=title, detail=detail or None, fix=fix or None, **extra)
