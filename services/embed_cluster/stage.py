"""Embed-and-cluster stage over a job's store: `embeddings.npy`, `partitions.npy`.
`run_embed_cluster` is the one entry, for the Celery task and the embedded runner alike."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from neuron_atlas_client.options import PipelineOptions
from shared.models.sentence_embedder import Embedder
from shared.pipeline.clustering import finch_partitions
from shared.pipeline.stage_job import StageJob
from shared.storage import artifacts
from shared.storage.stores import Store, put_json, put_npy


def embed_and_cluster(
    store: Store, options: PipelineOptions, embedder: Embedder, captions: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Embed the captions (in image order) and cluster them; returns (embeddings, partitions)."""
    embeddings = embedder.embed(captions, options.embed_batch_size)
    put_npy(store, artifacts.EMBEDDINGS, embeddings)
    put_json(
        store,
        artifacts.EMBEDDER,
        {
            "id": embedder.name,
            "source": embedder.source,
            "dimension": int(embeddings.shape[1]),
        },
    )
    partitions = finch_partitions(embeddings, options.ann_threshold, options.seed)
    put_npy(store, artifacts.PARTITIONS, partitions)
    return embeddings, partitions


def run_embed_cluster(
    store: Store, options: PipelineOptions, embedder: Embedder
) -> tuple[np.ndarray, np.ndarray]:
    """Every usable caption, in image order, into embeddings and partitions."""
    rows = artifacts.read_usable_captions(store)
    return embed_and_cluster(store, options, embedder, [row["caption"] for row in rows])


def embed_cluster_stage(job: StageJob, shard: int | None = None) -> None:
    """The stage table's entry (shared/pipeline/stages.py)."""
    run_embed_cluster(job.store, job.options, job.resource("embedder"))
