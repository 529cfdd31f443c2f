"""The Python client of the Neuron Atlas API (on httpx; sync `Client`, async `AsyncClient`).

    from neuron_atlas_client import Client
    with Client("http://gateway:8000") as atlas:   # key: NEURON_ATLAS_API_KEY
        job = atlas.submit("images/", {"model": "resnet18"})
        job = atlas.wait(job.id, timeout_s=3600, on_progress=print)
        top = atlas.concepts(job.id, level=max(c.level for c in atlas.concepts(job.id)))

The answers are the API's own models (`neuron_atlas_client.contracts.api`, `.contracts.hierarchy`).
The distribution `neuron-atlas-client` (`pip install ./client`) needs httpx and pydantic only; it
also holds the remote CLI (`neuron-atlas-remote`, `remote_cli`) and the MLflow helper
(`Client.log_to_mlflow`, `mlflow_log`; the `mlflow` extra).
"""

from neuron_atlas_client._core import (
    ApiError,
    ClientError,
    ConfigError,
    JobFailed,
    RetryNotice,
    RetryPolicy,
    TransportError,
    WaitTimeout,
)
from neuron_atlas_client.aio import AsyncClient
from neuron_atlas_client.contracts.api import (
    ArtifactsPublic,
    Callback,
    DeliveriesPublic,
    DeliveryAttempt,
    JobPublic,
    JobsPublic,
    NeuronPublic,
)
from neuron_atlas_client.contracts.hierarchy import Cluster, Hierarchy
from neuron_atlas_client.sync import Client

__all__ = [
    "ApiError",
    "ArtifactsPublic",
    "AsyncClient",
    "Callback",
    "Client",
    "ClientError",
    "Cluster",
    "ConfigError",
    "DeliveriesPublic",
    "DeliveryAttempt",
    "Hierarchy",
    "JobFailed",
    "JobPublic",
    "JobsPublic",
    "NeuronPublic",
    "RetryNotice",
    "RetryPolicy",
    "TransportError",
    "WaitTimeout",
]
