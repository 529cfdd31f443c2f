"""Labels from a language model (docs/labels.md): level-1 clusters from a sample of their
captions, higher levels as a generalisation of their children's labels together with each
child's difference description. Where the endpoint fails, the offline labeller's answer is
used and marked, or, in strict mode, the job fails."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from neuron_atlas_client.contracts.labels import ClusterLabel
from neuron_atlas_client.errors import LabellingError
from services.labelling.client import EndpointError, LLMClient, MalformedAnswer
from services.labelling.offline import describe_difference, generalise, representative_caption
from services.labelling.sampling import format_captions, sample_captions
from shared.pipeline.progress import NoProgress, Progress
from shared.pipeline.tree import ClusterNode

log = logging.getLogger(__name__)
T = TypeVar("T")

OFFLINE_FALLBACK = "offline-fallback"


@dataclass
class Written:
    """One cluster's label as it was decided."""

    text: str
    source: str
    warning: str | None = None


def clean(text: str) -> str:
    return " ".join(text.split()).strip()


def _check_label(answer: dict[str, Any]) -> None:
    if not clean(answer["label"]):
        raise MalformedAnswer("the label is empty")


def _parent_check(count: int) -> Callable[[dict[str, Any]], None]:
    def check(answer: dict[str, Any]) -> None:
        _check_label(answer)
        numbers = sorted(d["child"] for d in answer["differences"])
        if numbers != list(range(1, count + 1)):
            raise MalformedAnswer(f"differences must name each child 1..{count} once, got {numbers}")
        if any(not clean(d["difference"]) for d in answer["differences"]):
            raise MalformedAnswer("a difference is empty")

    return check


class TreeLabeller:
    """Labels one job's cluster tree through `client`."""

    def __init__(self, client: LLMClient, progress: Progress | None = None) -> None:
        self.client = client
        self.settings = client.settings
        self.source = self.settings.source_name
        self.progress = progress or NoProgress()
        self._halted: LabellingError | None = None  # strict mode failed: queued clusters stop

    def label(
        self, tree: Sequence[Sequence[ClusterNode]], captions: Sequence[str], embeddings: np.ndarray
    ) -> dict[str, ClusterLabel]:
        """Every cluster's label, level by level (a level needs its children's labels)."""
        written: dict[str, Written] = {}
        differences: dict[str, tuple[str | None, str]] = {}  # child -> (text, source)
        sizes = {node.id: len(node.images) for level in tree for node in level}
        first = self._map(lambda node: self._level1(node, captions, embeddings), tree[0])
        written.update(zip((node.id for node in tree[0]), first, strict=True))
        for level in tree[1:]:
            answers = self._map(lambda node: self._parent(node, written, sizes), level)
            for node, (parent, child_differences) in zip(level, answers, strict=True):
                written[node.id] = parent
                differences.update(child_differences)
        return {
            node.id: ClusterLabel(
                label=written[node.id].text,
                source=written[node.id].source,
                difference_description=differences[node.id][0] if node.parent else None,
                model=self.settings.model if written[node.id].source == self.source else None,
                prompt_version=(
                    self.settings.prompt_version if written[node.id].source == self.source else None
                ),
                warning=written[node.id].warning,
                difference_source=(
                    differences[node.id][1] if node.parent and differences[node.id][0] is not None else None
                ),
            )
            for level in tree
            for node in level
        }

    def _map(self, work: Callable[[ClusterNode], T], nodes: Sequence[ClusterNode]) -> list[T]:
        # Threads only wait on the network; the worker-wide semaphore bounds requests in flight.
        with ThreadPoolExecutor(max_workers=self.settings.concurrency) as pool:
            futures = [pool.submit(work, node) for node in nodes]
            try:
                return [future.result() for future in futures]
            except BaseException:
                for future in futures:
                    future.cancel()
                raise

    def _level1(self, node: ClusterNode, captions: Sequence[str], embeddings: np.ndarray) -> Written:
        if self._halted:
            raise self._halted
        members = [captions[i] for i in node.images]
        vectors = embeddings[node.images]
        sample = sample_captions(members, vectors, self.settings.caption_token_budget)
        prompt = self.client.prompts.level1.format(
            shown=sample.members, size=len(members), captions=format_captions(sample)
        )
        try:
            answer = self.client.ask("cluster_label", prompt, _check_label)
            result = Written(clean(answer["label"]), self.source)
        except (EndpointError, MalformedAnswer) as exc:
            result = self._fallback(node, representative_caption(members, vectors), exc)
        self.progress.advance("labels")
        return result

    def _parent(
        self, node: ClusterNode, written: dict[str, Written], sizes: dict[str, int]
    ) -> tuple[Written, dict[str, tuple[str | None, str]]]:
        if self._halted:
            raise self._halted
        children = node.children
        lines = "\n".join(
            f"{number}. {written[child].text} ({sizes[child]} images)"
            for number, child in enumerate(children, start=1)
        )
        prompt = self.client.prompts.parent.format(size=len(node.images), count=len(children), children=lines)
        try:
            answer = self.client.ask("parent_label", prompt, _parent_check(len(children)))
        except (EndpointError, MalformedAnswer) as exc:
            text = generalise([written[c].text for c in children], [sizes[c] for c in children])
            parent = self._fallback(node, text, exc)
            self.progress.advance("labels")
            return parent, {
                child: (describe_difference(written[child].text, text), OFFLINE_FALLBACK)
                for child in children
            }
        by_number = {d["child"]: clean(d["difference"]) for d in answer["differences"]}
        self.progress.advance("labels")
        return Written(clean(answer["label"]), self.source), {
            child: (by_number[number], self.source) for number, child in enumerate(children, start=1)
        }

    def _fallback(self, node: ClusterNode, text: str, exc: Exception) -> Written:
        reason = exc.reason if isinstance(exc, EndpointError) else str(exc)
        if self.settings.strict:
            self._halted = LabellingError(
                f"The labelling endpoint gave no label for cluster {node.id}: {reason}.",
                "Check the endpoint settings (NEURON_ATLAS_LLM__*), or run without strict mode "
                "to finish with offline labels marked as such.",
            )
            raise self._halted
        self.client.accounting.add(fallbacks=1)
        return Written(text, OFFLINE_FALLBACK, f"offline label: {reason}")
