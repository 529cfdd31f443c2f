"""Labelling stage over a job's store: `labels.json` for every cluster and `labelling.json`
(source, accounting, quality). `run_labelling` is the one entry for the Celery task and the
embedded runner; `run_relabel` the one for `neuron-atlas relabel` and the relabel task."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

import numpy as np

from neuron_atlas_client.contracts.labels import ClusterLabel, Labelling, LabelQuality, Labels
from neuron_atlas_client.errors import InputError
from services.labelling.cache import ResponseCache
from services.labelling.client import Accounting, LLMClient, public_endpoint
from services.labelling.llm import TreeLabeller
from services.labelling.offline import label_tree
from services.labelling.prompt_set import load_prompts
from services.labelling.quality import label_quality, quality_summary
from services.labelling.settings import LabelSettings, default_cache_dir, get_settings
from shared.jobs.dependencies import Dependency, DependencyDown
from shared.models.sentence_embedder import Embedder
from shared.pipeline.hierarchy import write_hierarchy
from shared.pipeline.progress import NoProgress, Progress
from shared.pipeline.stage_job import StageJob
from shared.pipeline.tree import build_tree
from shared.storage import artifacts
from shared.storage.stores import LocalStore, Store, get_npy

log = logging.getLogger(__name__)


def default_cache(settings: LabelSettings) -> ResponseCache | None:
    """The embedded response cache: a local folder (the suite passes its object-storage one)."""
    if not settings.cache:
        return None
    return ResponseCache(LocalStore(settings.cache_dir or default_cache_dir()))


def check_label_settings(settings: LabelSettings) -> None:
    """Fail in seconds, before the long stages, on labelling settings that cannot work."""
    if settings.uses_llm:
        load_prompts(settings.prompt_version)


def llm_dependency(settings: LabelSettings) -> Dependency:
    return Dependency(
        "llm",
        "the labelling endpoint (LLM)",
        fix="Check that the endpoint in NEURON_ATLAS_LLM__BASE_URL is up and reachable from the "
        'labelling workers, then submit the job again (or relabel it, with "offline": true for '
        "offline labels); artifacts computed so far are kept.",
        window_s=settings.outage_window_s,
    )


def label_clusters(
    store: Store,
    captions: Sequence[str],
    embedder: Embedder | None = None,
    settings: LabelSettings | None = None,
    cache: ResponseCache | None = None,
    progress: Progress | None = None,
    fail_when_unreachable: bool = False,
) -> dict[str, ClusterLabel]:
    """Labels from the captions, embeddings and partitions already in the store, scored.

    `settings` default to the environment's (`NEURON_ATLAS_LLM__*`); with no endpoint the
    offline labeller writes every label. `embedder` must be the job's sentence embedder
    (default: loaded from the job's spec) so the quality scores compare like with like.
    Raises `LabellingError` when the endpoint fails in strict mode, and with
    `fail_when_unreachable` (the suite) `DependencyDown` when it gave no answer at all: the task
    is then tried again for `outage_window_s`, where the embedded run writes offline labels."""
    settings = settings or get_settings()
    progress = progress or NoProgress()
    embeddings = get_npy(store, artifacts.EMBEDDINGS)
    tree = build_tree(get_npy(store, artifacts.PARTITIONS))
    labelling = Labelling.offline(settings.strict)
    warnings: list[str] = []
    progress.start("labels", sum(len(level) for level in tree))
    if settings.uses_llm:
        prompts = load_prompts(settings.prompt_version)  # an unknown version fails before any work
        client = LLMClient(settings, prompts, cache if cache is not None else default_cache(settings))
        labels = TreeLabeller(client, progress).label(tree, captions, embeddings)
        if fail_when_unreachable and client.unreachable:
            raise DependencyDown(llm_dependency(settings))
        labelling = labelling.model_copy(
            update={
                "source": "llm",
                "endpoint": public_endpoint(settings.base_url),
                "model": settings.model,
                "prompt_version": prompts.version,
            }
        )
        accounting = client.accounting.record(settings)
        if client.gave_up:
            warnings.append(client.gave_up)
        if accounting.fallbacks:
            warnings.append(
                f"{accounting.fallbacks} of {len(labels)} labels are offline labels because "
                "the endpoint gave no usable answer (label_source offline-fallback)"
            )
    else:
        labels = label_tree(tree, captions, embeddings)
        accounting = Accounting().record(settings)
    progress.finish("labels")
    embedder = embedder or Embedder(artifacts.read_options(store).embed_model)
    scores = label_quality(tree, label_vectors(labels, captions, embeddings, embedder), embeddings)
    labels = {i: label.model_copy(update={"quality": scores[i]}) for i, label in labels.items()}
    for warning in warnings:
        log.warning("labelling: %s", warning)
    labelling = labelling.model_copy(
        update={
            "labels": dict(Counter(label.source for label in labels.values())),
            "accounting": accounting,
            "quality": LabelQuality.model_validate(quality_summary(tree, scores)),
            "warnings": warnings,
        }
    )
    artifacts.write_model(store, artifacts.LABELS, Labels(labels))
    artifacts.write_model(store, artifacts.LABELLING, labelling)
    return labels


def label_vectors(
    labels: dict[str, ClusterLabel], captions: Sequence[str], embeddings: np.ndarray, embedder: Embedder
) -> dict[str, np.ndarray]:
    """Each label's sentence embedding; a label that is a caption (offline level 1) reuses the
    caption's, and each distinct text is embedded once."""
    row_of = {caption: i for i, caption in enumerate(captions)}
    fresh = sorted({label.label for label in labels.values()} - row_of.keys())
    vectors = dict(zip(fresh, embedder.embed(fresh), strict=True)) if fresh else {}
    return {
        cid: embeddings[row_of[label.label]] if label.label in row_of else vectors[label.label]
        for cid, label in labels.items()
    }


def run_labelling(
    store: Store,
    embedder: Embedder | None = None,
    settings: LabelSettings | None = None,
    cache: ResponseCache | None = None,
    progress: Progress | None = None,
    fail_when_unreachable: bool = False,
) -> dict[str, ClusterLabel]:
    """Label every cluster from the job's stored captions (see `label_clusters`)."""
    captions = [row["caption"] for row in artifacts.read_usable_captions(store)]
    return label_clusters(store, captions, embedder, settings, cache, progress, fail_when_unreachable)


def labelling_summary(store: Store) -> Labelling:
    """The job's `labelling.json`: source, accounting (for job status) and quality."""
    return artifacts.read_model(store, artifacts.LABELLING, Labelling)


def run_relabel(
    store: Store,
    version: str,
    settings: LabelSettings | None = None,
    embedder: Embedder | None = None,
    cache: ResponseCache | None = None,
    progress: Progress | None = None,
    fail_when_unreachable: bool = False,
) -> None:
    """Label a finished job again (other endpoint, model or prompt version) from its stored
    captions, embeddings, partitions and groups; rewrites labels and hierarchy.json."""
    missing = [
        key
        for key in (
            artifacts.SPEC,
            artifacts.MANIFEST,
            artifacts.EMBEDDINGS,
            artifacts.PARTITIONS,
            artifacts.GROUPS,
        )
        if not store.exists(key)
    ]
    if missing or not any(True for _ in store.list("captions/")):
        raise InputError(
            f"This is not a finished Neuron Atlas result: {', '.join(missing) or 'captions/'} missing.",
            "Point relabel at the OUT_DIR of a finished `neuron-atlas run`.",
        )
    run_labelling(store, embedder, settings, cache, progress, fail_when_unreachable)
    write_hierarchy(store, version)


def labelling_stage(job: StageJob, shard: int | None = None) -> None:
    """The stage table's entry (shared/pipeline/stages.py). `labelling` is the runner's: the settings
    (the suite's carry the tenant's token budget), the response cache, and whether an endpoint
    that does not answer fails the run (the suite's) or falls back to offline labels."""
    run_labelling(job.store, job.resource("embedder"), progress=job.progress, **job.resource("labelling"))
    job.report("labelling", labelling_summary(job.store).document())
