"""Opaque page tokens for `GET /v1/jobs`: the job store's cursor (`{stamp}:{job id}`), base64url."""

from __future__ import annotations

import base64
import binascii

from services.gateway.problems import Problem


def encode_page_token(cursor: str | None) -> str | None:
    return base64.urlsafe_b64encode(cursor.encode()).decode() if cursor else None


def decode_page_token(token: str) -> str:
    """The cursor in `token`; a 400 problem when it is not one this gateway made."""
    try:
        cursor = base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        cursor = ""
    stamp, _, job_id = cursor.partition(":")
    if not (stamp.isdigit() and len(job_id) == 32):
        raise Problem(
            400, "bad-request", "Invalid page_token.", fix="Pass the next_page_token of the previous page."
        )
    return cursor
