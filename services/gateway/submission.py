"""Read a job submission from the request: a multipart form (a `spec` part and files) or a JSON
body naming a bucket prefix."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from neuron_atlas_client.contracts.api import JobFromBucket, JobSpec
from services.gateway.problems import Problem
from services.gateway.submit import Upload

# The multipart parser's own limits; the body size is limited while it streams in (limits.py).
MAX_FILES, MAX_FIELDS, MAX_PART_BYTES = 10_000, 100, 1024 * 1024
# A JSON submission names a bucket prefix and options: a few kB. Far below the uploads' limit,
# so a huge JSON body is refused while it streams in, before it is held or parsed.
MAX_JSON_BYTES = 1024 * 1024

# The OpenAPI request body of POST /v1/jobs: FastAPI cannot infer it from a raw Request.
SUBMIT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["spec"],
                    "properties": {
                        "spec": {"type": "string", "description": "JSON: {options, captions, labels}"},
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "images, zip/tar archives, metadata.csv/jsonl",
                        },
                    },
                }
            },
            "application/json": {"schema": JobFromBucket.model_json_schema()},
        },
    }
}


@dataclass
class Submission:
    document: Any  # the spec as sent, for the idempotency fingerprint
    spec: JobSpec  # a JobFromBucket for a JSON submission
    uploads: list[Upload] = field(default_factory=list)


async def read_submission(request: Request) -> Submission:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        return await _read_form(request)
    if content_type.startswith("application/json"):
        body = await bounded_body(request, MAX_JSON_BYTES)
        document = parse_json(body)
        return Submission(document, _strict(JobFromBucket, body))
    raise Problem(
        415,
        "unsupported-media-type",
        "Send multipart/form-data or application/json.",
        headers={"Accept-Post": "multipart/form-data, application/json"},
    )


async def _read_form(request: Request) -> Submission:
    try:
        form = await request.form(max_files=MAX_FILES, max_fields=MAX_FIELDS, max_part_size=MAX_PART_BYTES)
    except UnicodeDecodeError:
        raise Problem(
            422, "invalid-spec", "A form field is not valid UTF-8.", fix="Send the spec part as UTF-8 JSON."
        ) from None
    except HTTPException as exc:  # Starlette's parser: malformed, or over its limits
        raise Problem(
            400,
            "bad-request",
            "The multipart body cannot be read.",
            str(exc.detail),
            fix=f"Send multipart/form-data with a `spec` part and file parts (curl -F), at most "
            f"{MAX_FILES:,} files, {MAX_FIELDS} fields and {MAX_PART_BYTES // 1024:,} KiB a field.",
        ) from None
    spec_field = form.get("spec")
    if spec_field is None:
        raise Problem(
            422, "invalid-spec", "The `spec` part is missing.", fix="Add -F spec='{\"options\": {}}'."
        )
    spec_bytes = spec_field.encode() if isinstance(spec_field, str) else await spec_field.read()
    document = parse_json(spec_bytes)
    submission = Submission(document, _strict(JobSpec, spec_bytes))
    for _, value in form.multi_items():
        if isinstance(value, UploadFile) and value is not spec_field:
            submission.uploads.append((value.filename or "upload", value.file))
    if not submission.uploads:
        raise Problem(422, "invalid-input", "No files were sent.", fix="Add images with -F files=@image.jpg.")
    return submission


async def bounded_body(request: Request, limit: int) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Problem(
                413,
                "content-too-large",
                f"A JSON submission may be at most {limit:,} bytes.",
                fix="Send images as multipart/form-data files, or name a bucket prefix.",
            )
    return bytes(body)


Spec = TypeVar("Spec", bound=JobSpec)


def _strict(model: type[Spec], data: bytes) -> Spec:
    """The spec, validated as the OpenAPI schema describes it: a string is not a number and 0 is
    not false (pydantic's lax mode took `"seed": "5"`). JSON mode, so arrays still fill tuples.
    Called after `parse_json`, which turned bytes that are not UTF-8 JSON of sane depth into a 422."""
    return model.model_validate_json(data, strict=True)


def parse_json(data: bytes) -> Any:
    """The spec document; a 422 problem for bytes that are not UTF-8 JSON of sane depth."""
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise Problem(
            422,
            "invalid-spec",
            "The spec is not valid UTF-8.",
            f"Byte {exc.start} is not UTF-8; send UTF-8 JSON.",
        ) from None
    except json.JSONDecodeError as exc:
        raise Problem(422, "invalid-spec", "The spec is not valid JSON.", f"{exc.msg} at {exc.pos}") from None
    except RecursionError:
        raise Problem(
            422, "invalid-spec", "The spec is nested too deeply.", "A spec is a flat object of options."
        ) from None
