"""The offline labeller: deterministic labels from the captions alone, no network.

Level 1: the member caption nearest the cluster's embedding centroid. Higher levels: the words
most of the children's labels share. Differences: the words a child's label has and its
parent's lacks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from neuron_atlas_client.contracts.labels import ClusterLabel
from shared.pipeline.tree import ClusterNode

OFFLINE = "offline"  # label_source and difference_source of what this module writes

# Function words only (articles, prepositions, pronouns, auxiliaries, vague quantifiers): words
# that say nothing about what a picture shows. Numbers are content ("two dogs" is not "dogs"), so
# no number word is here, and numerals ("2", "3rd", "1990s", "3-year-old") are words too.
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "on",
        "in",
        "at",
        "to",
        "with",
        "and",
        "or",
        "for",
        "from",
        "by",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "there",
        "their",
        "his",
        "her",
        "some",
        "any",
        "several",
        "many",
        "very",
        "into",
        "onto",
        "over",
        "under",
        "near",
        "next",
        "up",
        "down",
        "out",
        "off",
        "as",
        "while",
        "has",
        "have",
        "having",
    ]
)
_WORD = re.compile(r"\d+(?:[.,]\d+)*(?:-?[a-z0-9]+)*|[a-z][a-z0-9'-]*")


def content_words(text: str) -> list[str]:
    """Lower-case words of `text` that carry meaning (numerals included), in order, each once."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(text.lower()):
        if word not in STOPWORDS and (len(word) > 1 or word.isdigit()):
            seen.setdefault(word, None)
    return list(seen)


def representative_caption(captions: Sequence[str], embeddings: np.ndarray) -> str:
    """The caption whose embedding is nearest the members' centroid (first one on ties)."""
    centroid = embeddings.mean(axis=0)
    return captions[int(np.argmax(embeddings @ centroid))]


def generalise(labels: Sequence[str], weights: Sequence[int]) -> str:
    """A label for a parent from its children's labels, weighted by the children's sizes.

    The words found in children holding more than half of the parent's images, in the order of
    the largest child's label; with none shared, the leading words of the largest children.
    """
    total = float(sum(weights))
    weight_of: dict[str, float] = {}
    for label, weight in zip(labels, weights, strict=True):
        for word in content_words(label):
            weight_of[word] = weight_of.get(word, 0.0) + weight
    by_size = sorted(range(len(labels)), key=lambda i: -weights[i])
    largest = content_words(labels[by_size[0]])
    shared = [w for w in largest if weight_of[w] > total / 2]
    if shared:
        return " ".join(shared)
    heads = [" ".join(content_words(labels[i])[:2]) for i in by_size[:3]]
    return " / ".join(h for h in heads if h) or labels[by_size[0]]


def describe_difference(child_label: str, parent_label: str) -> str | None:
    """What the child's label says that its parent's does not, e.g. 'snowy forest'."""
    parent_words = set(content_words(parent_label))
    extra = [w for w in content_words(child_label) if w not in parent_words]
    return " ".join(extra) or None


def label_tree(
    tree: Sequence[Sequence[ClusterNode]], captions: Sequence[str], embeddings: np.ndarray
) -> dict[str, ClusterLabel]:
    """Offline labels for every cluster, finest level first, then differences to parents."""
    text: dict[str, str] = {}
    sizes: dict[str, int] = {}
    for node in tree[0]:
        members = node.images
        text[node.id] = representative_caption([captions[i] for i in members], embeddings[members])
        sizes[node.id] = len(members)
    for level in tree[1:]:
        for node in level:
            text[node.id] = generalise([text[c] for c in node.children], [sizes[c] for c in node.children])
            sizes[node.id] = len(node.images)
    labels = {}
    for level in tree:
        for node in level:
            difference = describe_difference(text[node.id], text[node.parent]) if node.parent else None
            labels[node.id] = ClusterLabel(
                label=text[node.id],
                source=OFFLINE,
                difference_description=difference,
                difference_source=OFFLINE if difference is not None else None,
            )
    return labels
