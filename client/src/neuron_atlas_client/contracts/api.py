"""Request and response bodies of the public API (`/v1`): the gateway answers with these and the
Python client (`neuron_atlas_client`) reads them, so both sides share one definition. Pure
pydantic: importing them pulls in neither Redis nor torch."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from neuron_atlas_client.contracts.input_check import RunWarning
from neuron_atlas_client.contracts.labels import Labelling
from neuron_atlas_client.contracts.models import ModelRecord, Preprocessing
from neuron_atlas_client.contracts.problem import ProblemDetails
from neuron_atlas_client.contracts.uncertainty import Evidence, UncertaintySummary
from neuron_atlas_client.options import PipelineOptions

Status = Literal["queued", "running", "succeeded", "failed", "cancelling", "cancelled"]

# Webhook events: one per way a job ends.
WebhookEvent = Literal["job.succeeded", "job.failed", "job.cancelled"]
WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = ("job.succeeded", "job.failed", "job.cancelled")


class Callback(BaseModel):
    """A webhook: where to POST which events (Standard Webhooks: signed with the tenant's secret)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        max_length=2048,
        description="https URL on a public address (http and loopback only in development).",
    )
    events: list[WebhookEvent] = Field(default_factory=lambda: list(WEBHOOK_EVENTS), min_length=1)


class JobSpec(BaseModel):
    """The `spec` part of a multipart submission: the CLI's options, and captions it brings."""

    model_config = ConfigDict(extra="forbid")

    options: PipelineOptions = Field(default_factory=PipelineOptions)
    captions: dict[str, str] = Field(
        default_factory=dict, description="file_name -> caption; wins over a metadata.csv/jsonl."
    )
    callbacks: list[Callback] = Field(
        default_factory=list, max_length=5, description="Webhooks to call when the job ends."
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="file_name -> class label (the target model's class index, as a string), for "
        "the input check (the job's `warnings`) and the pruning curve's accuracy; wins over a "
        "metadata.csv/jsonl `label` column.",
    )


class PrefixSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prefix: str = Field(
        description="Bucket prefix holding the images, under `imports/{tenant}/` "
        "(e.g. imports/acme/batch-1/). A metadata.csv/jsonl directly under it brings captions."
    )


class JobFromBucket(JobSpec):
    """JSON submission of images already in the bucket."""

    source: PrefixSource


class StageProgress(BaseModel):
    done: int
    total: int


class JobLinks(BaseModel):
    self: str
    hierarchy: str
    artifacts: str
    cancel: str


class JobPublic(BaseModel):
    id: str
    status: Status
    stage: str
    progress: dict[str, StageProgress]
    images: int
    skipped: int
    created_at: str
    updated_at: str
    started_at: str | None
    finished_at: str | None
    error: ProblemDetails | None = Field(None, description="problem+json fields when the job failed")
    labelling: Labelling | None = Field(
        None,
        description="Once labelled: who wrote the labels (source, model, prompt version), the "
        "accounting (requests, prompt and completion tokens, cache hits, cost) and label quality.",
    )
    uncertainty: UncertaintySummary | None = Field(
        None,
        description="Once the uncertainty stage ran: shares of reliable and of selective "
        "memberships, group and clustering stability, and per test (specificity, keep-only, "
        "difference, importance) the concepts tested, significant, and not tested (budget, too "
        "few images).",
    )
    warnings: list[RunWarning] = Field(
        default_factory=list,
        description="What makes the result doubtful, each with what to do (hierarchy.json's "
        "`warnings`), as soon as it is found: e.g. labelled images that the target model gets near "
        "chance with the input size used. With options.strict the job fails with it instead.",
    )
    links: JobLinks


class RelabelRequest(BaseModel):
    """Other labelling settings for a finished job; the endpoint and key stay the deployment's."""

    # strict: `"strict": 0` is not a boolean, as the schema says (schemathesis sent it, and it
    # was taken as false)
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = Field(None, description="Model name at the deployment's endpoint.")
    prompt_version: str | None = Field(None, description="Prompt set, e.g. v1.")
    offline: bool = Field(False, description="Write offline labels instead.")
    strict: bool = Field(False, description="Fail instead of falling back to offline labels.")


class JobsPublic(BaseModel):
    jobs: list[JobPublic]
    next_page_token: str | None


class ArtifactPublic(BaseModel):
    name: str
    url: str


class ArtifactsPublic(BaseModel):
    expires_in_s: int
    artifacts: list[ArtifactPublic]


class NeuronClusterPublic(BaseModel):
    id: str
    level: int
    label: str
    support: float
    difference: bool = Field(description="In the cluster's group but not in its parent's.")
    evidence: Evidence | None = Field(
        None,
        description="How far to trust this membership: count, confidence interval, selectivity p- "
        "and q-value, selective, generic, reliable (null: too few images to tell), bootstrap "
        "inclusion probability, expected support under the dropout passes (hierarchy.json schema, "
        "$defs/Evidence; docs/reference/evidence.md).",
    )


class NeuronPublic(BaseModel):
    layer: str
    channel: int
    clusters: list[NeuronClusterPublic]


DeliveryOutcome = Literal["delivered", "retrying", "failed", "refused"]


class DeliveryAttempt(BaseModel):
    """One attempt to deliver one webhook message."""

    webhook_id: str = Field(description="`webhook-id`: the same for every attempt of one message.")
    event: WebhookEvent
    url: str
    attempt: int = Field(ge=1)
    at: str = Field(description="When the attempt started (UTC, ISO 8601).")
    outcome: DeliveryOutcome
    status_code: int | None = Field(None, description="The receiver's HTTP status, if it answered.")
    error: str | None = Field(None, description="Why it failed, when it did.")
    duration_ms: float | None = None
    next_attempt_in_s: float | None = Field(None, description="When `retrying`: the back-off.")


class DeliveriesPublic(BaseModel):
    deliveries: list[DeliveryAttempt]


class WebhookSecretPublic(BaseModel):
    secret: str = Field(description="`whsec_...`: verify `webhook-signature` with it.")


# MLflow resolves `file://`, `s3://`, `dbfs:/` and bare paths too, each read with the worker's own
# rights: a tenant could copy another tenant's cached weights, or any folder, out of a worker.
# Only the tracking server's own names are taken; no `..` climbs out of a run's artifacts.
MLFLOW_URI_PATTERN = r"^(models:/[^/\s][^\s]*|runs:/[0-9a-zA-Z]+(/[^\s]*)?)$"


class ModelImportSource(BaseModel):
    """Where an imported model's safetensors file lives."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["bucket", "mlflow", "hub"]
    uri: str = Field(
        min_length=1,
        max_length=1000,
        description="bucket: a prefix under imports/{tenant}/; mlflow: models:/NAME/VERSION or "
        "runs:/RUN_ID/PATH (no other scheme); hub: a Hugging Face repository id that the "
        "deployment allows (ALLOWED_HUB_MODELS), holding model.safetensors.",
    )

    @model_validator(mode="after")
    def _names_no_path(self) -> ModelImportSource:
        climbs = ".." in self.uri.replace("\\", "/").split("/")
        if self.kind == "mlflow" and (climbs or not re.fullmatch(MLFLOW_URI_PATTERN, self.uri)):
            raise ValueError(
                "an MLflow import takes models:/NAME/VERSION (or models:/NAME@ALIAS) or "
                "runs:/RUN_ID/PATH without `..`; other URIs (file://, s3://, paths) are never read"
            )
        if climbs:
            raise ValueError("uri may not contain `..`")
        return self


class ModelImport(BaseModel):
    """POST /v1/models as JSON: import a model instead of uploading it."""

    model_config = ConfigDict(extra="forbid")

    architecture: str = Field(min_length=1, max_length=200, description="torchvision:NAME or timm:NAME.")
    source: ModelImportSource
    num_classes: int | None = Field(None, ge=1, le=1_000_000)
    class_names: list[str] | None = Field(None, max_length=1_000_000)
    preprocessing: Preprocessing | None = None


class ModelsPublic(BaseModel):
    items: list[ModelRecord]
    next_page_token: str | None = None
