"""The base of every contract: strict about unknown fields; and optional sections that the JSON
documents have always left out, rather than written as null, when they are absent."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Count = Annotated[int, Field(ge=0)]


def _is_none(value: object) -> bool:
    return value is None


def omitted_when_none(description: str) -> Any:
    """A field that is left out of the document, not written as null, when it is None."""
    return Field(None, exclude_if=_is_none, description=description)


class Contract(BaseModel):
    # NaN and infinities are written as Python's json module writes them (NaN, Infinity), as
    # artifacts were before pydantic serialised them; its default, null, would not read back.
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")

    def document(self) -> dict[str, Any]:
        """The JSON document, as written to storage."""
        return self.model_dump(mode="json")
