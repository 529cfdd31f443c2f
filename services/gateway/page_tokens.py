"""Page tokens for `GET /v1/jobs`: the job store's cursor (`{stamp}:{job id}`) as
`{stamp}-{job id}`.

Clients treat them as opaque. They used to be base64, which no schema can describe: a token
that followed the OpenAPI document could still be refused (schemathesis found it). Now the
pattern below is the whole rule, FastAPI checks it (422), and any token that matches it names a
position in the tenant's own list, so it is accepted; a forged one shows only the caller's jobs.
"""

from __future__ import annotations

PAGE_TOKEN_PATTERN = "^[0-9]{20}-[0-9a-f]{32}$"


def encode_page_token(cursor: str | None) -> str | None:
    return cursor.replace(":", "-", 1) if cursor else None


def decode_page_token(token: str) -> str:
    """The cursor in `token` (already checked against `PAGE_TOKEN_PATTERN`)."""
    return token.replace("-", ":", 1)
