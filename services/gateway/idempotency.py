"""`Idempotency-Key` on POST /v1/jobs, in four steps: fingerprint the request, reserve the key
(or replay the first answer), then complete it with the answer, or release it on failure."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fastapi import Response
from fastapi.concurrency import run_in_threadpool

from services.gateway.problems import Problem
from services.gateway.submit import Upload, fingerprint
from shared.jobs.jobstore import JobStore


@dataclass(frozen=True)
class IdempotentRequest:
    jobs: JobStore
    tenant: str
    key: str
    fingerprint: str
    ttl_s: int

    @classmethod
    async def reserve(
        cls, jobs: JobStore, tenant: str, key: str, document: Any, uploads: list[Upload], ttl_s: int
    ) -> IdempotentRequest | Response:
        """The reservation of `key`; or the first answer's replay when the key was used before."""
        print_ = await run_in_threadpool(fingerprint, document, uploads)
        first = await run_in_threadpool(jobs.reserve_idempotency, tenant, key, print_, ttl_s)
        if first is not None:
            return replay(first, print_)
        return cls(jobs, tenant, key, print_, ttl_s)

    async def complete(self, status: int, location: str, body: dict[str, Any]) -> None:
        answer = {"status": status, "location": location, "body": body}
        await run_in_threadpool(
            self.jobs.complete_idempotency, self.tenant, self.key, self.fingerprint, answer, self.ttl_s
        )

    async def release(self) -> None:
        await run_in_threadpool(self.jobs.release_idempotency, self.tenant, self.key)


def replay(first: dict[str, Any], print_: str) -> Response:
    """The first answer again, or a problem when the key was used for another request or its
    first request is still running."""
    if first["fingerprint"] != print_:
        raise Problem(
            422,
            "idempotency-key-reused",
            "This Idempotency-Key was used for a different request.",
            fix="Use a new key for a new submission.",
        )
    if first["state"] != "done":
        raise Problem(
            409,
            "idempotency-key-in-use",
            "A request with this Idempotency-Key is in progress.",
            fix="Retry shortly.",
        )
    answer = first["response"]
    return Response(
        json.dumps(answer["body"]),
        status_code=answer["status"],
        media_type="application/json",
        headers={"Location": answer["location"], "Idempotent-Replayed": "true"},
    )
