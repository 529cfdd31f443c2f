"""The LLM spend of one labelling run, capped: a request is not sent when the tokens already
spent plus its own estimate would pass `max_tokens_per_job`.

The estimate (prompt characters / 4, plus the answer's `max_tokens`) is taken before sending, as
the endpoint's own count is known only after; requests already in flight (at most
`CONCURRENCY`) still finish, so a run spends at most the budget plus their answers. Cached
answers cost nothing and never count."""

from __future__ import annotations

from collections.abc import Sequence

from neuron_atlas_client.errors import LabellingError
from services.labelling.sampling import estimate_tokens


class LLMBudgetExceeded(LabellingError):
    """The labelling run would spend more tokens than its job may; `spent`: what it had spent."""

    kind = "llm-budget-exceeded"

    def __init__(self, message: str, fix: str = "", spent: int = 0) -> None:
        super().__init__(message, fix)
        self.spent = spent


def request_estimate(messages: Sequence[dict[str, str]], max_tokens: int) -> int:
    """Tokens one request may cost: its prompt, estimated, and the longest answer it allows."""
    return sum(estimate_tokens(m.get("content", "")) for m in messages) + max_tokens


def check_budget(budget: int | None, spent: int, estimate: int) -> None:
    """Raise `LLMBudgetExceeded` when sending a request of `estimate` tokens would pass it."""
    if budget is None or spent + estimate <= budget:
        return
    raise LLMBudgetExceeded(
        f"Labelling this job with the language model needs more than its budget of {budget:,} "
        f"tokens ({spent:,} spent, the next request about {estimate:,} more); no further request "
        "was sent.",
        "Relabel it with offline labels (POST /v1/jobs/{id}:relabel with "
        '{"offline": true}), or ask the operator to raise the tenant\'s max_llm_tokens_per_job '
        "(GATEWAY_MAX_LLM_TOKENS_PER_JOB, GATEWAY_TENANT_QUOTAS).",
        spent,
    )
