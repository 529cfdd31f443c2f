"""Model names that API callers may use. A worker loads whatever a name resolves to, and
`from_pretrained` takes a local folder before the hub: a caller's name must be one the operator
allows (`ALLOWED_HUB_MODELS`), never a path. Paths stay a CLI feature, where the files are the
user's own."""

from __future__ import annotations

from collections.abc import Collection

from neuron_atlas_client.errors import InputError


class ModelNotAllowed(InputError):
    kind = "model-not-allowed"


def check_allowed(field: str, name: str, allowed: Collection[str]) -> None:
    """Raise unless `name` is one of the deployment's allowed hub ids."""
    if name in allowed:
        return
    offered = ", ".join(sorted(allowed)) or "none"
    raise ModelNotAllowed(
        f"{field} {name[:200]!r} is not a model this deployment offers (it offers: {offered}).",
        "Name one of those, or ask the operator to add the hub id to ALLOWED_HUB_MODELS; files "
        "and folders are never read through the API.",
    )
