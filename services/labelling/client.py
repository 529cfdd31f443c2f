"""Requests to an OpenAI-compatible chat endpoint through the official `openai` client: explicit
timeout, our own retries with backoff that honours `Retry-After`, a per-worker concurrency
limit, structured answers parsed and validated, the response cache, and token accounting."""

from __future__ import annotations

import email.utils
import json
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import jsonschema

from neuron_atlas_client.contracts.labels import Accounting as AccountingRecord
from services.labelling.budget import check_budget, request_estimate
from services.labelling.cache import ResponseCache, cache_key
from services.labelling.prompt_set import PromptSet
from services.labelling.settings import LabelSettings

if TYPE_CHECKING:  # a second of import: an offline run, which asks no endpoint, never pays it
    import openai

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 409, 429})
# What a proxy answers for an endpoint that is down: no answer from the endpoint itself.
NO_ANSWER_STATUS = frozenset({502, 503, 504})
# The endpoint will not start working by itself for the rest of the job.
FATAL_STATUS = frozenset({401, 403, 404})


class EndpointError(Exception):
    """The endpoint gave no usable answer after the allowed retries."""

    def __init__(self, reason: str, fatal: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fatal = fatal


class MalformedAnswer(Exception):
    """An answer that is not JSON, breaks the response schema, or fails the caller's check."""


@dataclass
class Accounting:
    """What labelling one job cost. Thread-safe; tokens are what the endpoint reported."""

    requests: int = 0  # HTTP requests sent, retries included
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_hits: int = 0
    retries: int = 0
    malformed_answers: int = 0
    fallbacks: int = 0  # clusters labelled offline because the endpoint failed
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **amounts: int) -> None:
        with self._lock:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)

    def record(self, settings: LabelSettings) -> AccountingRecord:
        """The job's accounting as labelling.json records it, with a cost when prices are set."""
        cost: float | None = None
        prices = (settings.prompt_price_per_million, settings.completion_price_per_million)
        if prices[0] is not None and prices[1] is not None:
            cost = round((self.prompt_tokens * prices[0] + self.completion_tokens * prices[1]) / 1e6, 6)
        return AccountingRecord(
            requests=self.requests,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            total_tokens=self.prompt_tokens + self.completion_tokens,
            cache_hits=self.cache_hits,
            retries=self.retries,
            malformed_answers=self.malformed_answers,
            fallbacks=self.fallbacks,
            cost_usd=cost,
        )


@cache
def worker_slots(limit: int) -> threading.BoundedSemaphore:
    """One semaphore per process and limit: every job in this worker shares the limit."""
    return threading.BoundedSemaphore(limit)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked us to wait: `retry-after-ms`, `Retry-After` in seconds or as
    an HTTP date; None when absent or unreadable."""
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            parsed = email.utils.parsedate_tz(value) if divisor == 1.0 else None
            if parsed is None:
                continue
            seconds = email.utils.mktime_tz(parsed) - time.time()
        if math.isfinite(seconds):
            return max(seconds, 0.0)
    return None


def public_endpoint(base_url: str | None) -> str:
    """The endpoint as it may be recorded: no credentials, no query."""
    if base_url is None:
        return "https://api.openai.com/v1"
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def api_key(settings: LabelSettings) -> str:
    """The configured key, else the client's own OPENAI_API_KEY, else a dummy: local servers
    (vLLM, Ollama, LM Studio) take any key, and the client insists on one."""
    if settings.api_key:
        return settings.api_key.get_secret_value()
    return os.environ.get("OPENAI_API_KEY") or "not-needed"


def make_openai_client(settings: LabelSettings) -> openai.OpenAI:
    import openai

    return openai.OpenAI(
        base_url=settings.base_url,
        api_key=api_key(settings),
        organization=settings.organization,
        timeout=settings.timeout,
        max_retries=0,  # retries are ours: counted, capped and logged per job
    )


def strip_fences(text: str) -> str:
    """Some local models wrap JSON in a Markdown fence even in JSON mode."""
    text = text.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    return text.strip()


class LLMClient:
    """Structured chat completions for one job: `ask()` returns a validated JSON object."""

    def __init__(
        self,
        settings: LabelSettings,
        prompts: PromptSet,
        cache: ResponseCache | None = None,
        client: openai.OpenAI | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.prompts = prompts
        self.cache = cache
        self.client = client or make_openai_client(settings)
        self.accounting = Accounting()
        self._slots = worker_slots(settings.concurrency)
        self._sleep = sleep
        self._lock = threading.Lock()
        self._failures_in_row = 0
        self._no_answers = 0  # requests that got no answer at all, after their retries
        self._gave_up: str | None = None

    def ask(
        self, kind: str, user: str, check: Callable[[dict[str, Any]], None] | None = None
    ) -> dict[str, Any]:
        """The answer to one prompt of schema `kind`, from the cache or the endpoint.

        A malformed answer is asked again once, with what was wrong; raises `MalformedAnswer`
        after that, `EndpointError` when the endpoint fails."""
        schema = self.prompts.schemas[kind]
        messages: list[dict[str, str]] = [
            {"role": "system", "content": self.prompts.system},
            {"role": "user", "content": self._with_schema(user, schema)},
        ]
        key = cache_key(self.settings.model, self.prompts.version, kind, messages)
        if self.cache and self.settings.cache:
            cached = self.cache.get(key)
            if cached is not None and self._valid(cached, schema, check) is None:
                self.accounting.add(cache_hits=1)
                return cached
        for attempt in range(2):
            content, usage = self._complete(kind, messages, schema)
            answer, problem = self._parse(content, schema, check)
            if answer is not None:
                if self.cache and self.settings.cache:
                    self.cache.put(key, answer, usage)
                return answer
            self.accounting.add(malformed_answers=1)
            log.info("malformed %s answer (attempt %d): %s", kind, attempt + 1, problem)
            messages = [
                *messages,
                {"role": "assistant", "content": content or ""},
                {
                    "role": "user",
                    "content": f"That answer was not valid: {problem}. "
                    "Answer again with only the JSON object.",
                },
            ]
        raise MalformedAnswer(f"malformed answer twice ({problem})")

    def _with_schema(self, user: str, schema: dict[str, Any]) -> str:
        if self.settings.response_format == "json_schema":
            return user  # the schema travels in response_format
        return f"{user}\n\nAnswer with a JSON object of this JSON Schema:\n{json.dumps(schema)}"

    def _parse(
        self, content: str | None, schema: dict[str, Any], check: Callable[[dict[str, Any]], None] | None
    ) -> tuple[dict[str, Any] | None, str]:
        if content is None:
            return None, "the answer was empty or cut off"
        try:
            answer = json.loads(strip_fences(content))
        except json.JSONDecodeError as exc:
            return None, f"not JSON ({exc.msg} at character {exc.pos})"
        problem = self._valid(answer, schema, check)
        return (answer, "") if problem is None else (None, problem)

    @staticmethod
    def _valid(
        answer: Any, schema: dict[str, Any], check: Callable[[dict[str, Any]], None] | None
    ) -> str | None:
        """None when `answer` is acceptable, else what is wrong with it."""
        try:
            jsonschema.validate(answer, schema)
            if check:
                check(answer)
        except jsonschema.ValidationError as exc:
            return f"does not follow the schema ({exc.message})"
        except MalformedAnswer as exc:
            return str(exc)
        return None

    def _complete(
        self, kind: str, messages: list[dict[str, str]], schema: dict[str, Any]
    ) -> tuple[str | None, dict[str, int]]:
        """(content, usage) of one completion, retrying 408/409/429/5xx, timeouts and lost
        connections; content is None when the answer was cut off."""
        response_format: dict[str, Any] = (
            {"type": "json_schema", "json_schema": {"name": kind, "strict": True, "schema": schema}}
            if self.settings.response_format == "json_schema"
            else {"type": "json_object"}
        )
        request: dict[str, Any] = {
            "model": self.settings.model,
            "messages": messages,
            "temperature": self.prompts.temperature,
            "max_tokens": self.prompts.max_tokens,
            "response_format": response_format,
        }
        with self._lock:
            if self._gave_up:
                raise EndpointError(f"not asked: {self._gave_up}")
        estimate = request_estimate(messages, self.prompts.max_tokens)
        import openai  # its errors, below (already loaded by the time any request is made)

        # Hand-written on purpose: the openai client's own retries (and tenacity's) cannot count
        # each retry into this job's accounting, give up for the whole job after
        # MAX_CONSECUTIVE_FAILURES, or refuse a Retry-After beyond MAX_RETRY_WAIT.
        for attempt in range(self.settings.max_retries + 1):
            wait: float | None = None
            try:
                with self._slots:
                    spent = self.accounting.prompt_tokens + self.accounting.completion_tokens
                    check_budget(self.settings.max_tokens_per_job, spent, estimate)  # retries cost too
                    self.accounting.add(requests=1)
                    completion = self.client.chat.completions.create(**request)
            except openai.APIConnectionError as exc:  # timeouts included
                reason = "timed out" if isinstance(exc, openai.APITimeoutError) else f"connection: {exc}"
                no_answer = True
            except openai.APIStatusError as exc:
                reason = f"HTTP {exc.status_code}: {_short(exc.message)}"
                no_answer = exc.status_code in NO_ANSWER_STATUS
                if exc.status_code not in RETRYABLE_STATUS and exc.status_code < 500:
                    self._failed(reason, fatal=exc.status_code in FATAL_STATUS)
                wait = parse_retry_after(exc.response.headers)
                if wait is not None and wait > self.settings.max_retry_wait:
                    self._failed(f"{reason}; asked to wait {wait:.0f} s, above max_retry_wait")
            else:
                self._succeeded()
                usage = {
                    "prompt_tokens": completion.usage.prompt_tokens if completion.usage else 0,
                    "completion_tokens": completion.usage.completion_tokens if completion.usage else 0,
                }
                self.accounting.add(**usage)
                choice = completion.choices[0] if completion.choices else None
                if choice is None or choice.finish_reason == "length":
                    return None, usage
                return choice.message.content, usage
            if attempt == self.settings.max_retries:
                self._failed(f"{reason} (after {attempt + 1} attempts)", no_answer=no_answer)
            if wait is None:
                backoff = self.settings.backoff_base * 2.0**attempt
                wait = min(backoff * (1.0 - 0.25 * random.random()), self.settings.max_retry_wait)
            log.info("%s request %s; retrying in %.2f s", kind, reason, wait)
            self.accounting.add(retries=1)
            self._sleep(wait)
        raise AssertionError("unreachable: the last attempt raises")

    def _succeeded(self) -> None:
        with self._lock:
            self._failures_in_row = 0

    def _failed(self, reason: str, fatal: bool = False, no_answer: bool = False) -> None:
        """Count a failed request; after enough in a row (or one that cannot heal), stop asking."""
        with self._lock:
            self._failures_in_row += 1
            self._no_answers += no_answer
            if fatal or self._failures_in_row >= self.settings.max_consecutive_failures:
                self._gave_up = self._gave_up or f"endpoint failed ({reason}); stopped asking it"
        raise EndpointError(reason, fatal)

    @property
    def gave_up(self) -> str | None:
        return self._gave_up

    @property
    def unreachable(self) -> bool:
        """Some request got no answer at all after its retries (refused connections, timeouts,
        502/503/504 from a proxy in front of it): the endpoint was down for part of the run, not
        misbehaving. The suite tries the task again; answers received are in the cache."""
        with self._lock:
            return self._no_answers > 0


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
