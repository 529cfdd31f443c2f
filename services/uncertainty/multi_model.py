"""The last stage of a job of several target models (issue 27; docs/comparison.md, 'One job,
several models'): the baseline (the first model) compared with each other model, by the same code
as `neuron-atlas compare` and POST /v1/comparisons, into `comparisons/{key}.json`; and
`models.json`, the one concept tree with a section per model.

Each model's folder with the job's root reads as that model's single-model result
(`shared.pipeline.model_view`), so the comparison reads the two exactly as it reads two finished
jobs: a multi-model job and two separate runs give the same comparison.
"""

from __future__ import annotations

from datetime import UTC, datetime

from neuron_atlas_client.contracts.hierarchy import Cluster, Hierarchy
from neuron_atlas_client.contracts.multi_model import (
    ConceptAcrossModels,
    ConceptInModel,
    CostNote,
    GroupNeuron,
    ModelSection,
    MultiModelResult,
)
from neuron_atlas_client.options import PipelineOptions
from services.uncertainty.comparison import causal_effect, compare_results
from shared.pipeline import stages
from shared.pipeline.hierarchy import read_hierarchy
from shared.pipeline.model_view import model_store
from shared.pipeline.stage_job import StageJob
from shared.storage import artifacts
from shared.storage.artifacts import write_model
from shared.storage.stores import Store

COST_NOTE = (
    "Captions, embeddings, clusters and labels were computed once for all the models; only the "
    "activations, groups, uncertainty and hierarchy were computed per model."
)


def model_source(key: str) -> str:
    """How a comparison names a model of this job (its folder)."""
    return artifacts.model_prefix(key).rstrip("/")


def write_comparisons(store: Store, options: PipelineOptions) -> list[str]:
    """`comparisons/{key}.json` for every model but the baseline; the keys written."""
    base, *others = [model.resolved_key for model in options.target_models()]
    for key in others:
        comparison = compare_results(
            model_store(store, base),
            model_store(store, key),
            (model_source(base), model_source(key)),
            generator="neuron-atlas",
        )
        write_model(store, artifacts.comparison_key(key), comparison)
    return others


def _concept_in(cluster: Cluster) -> ConceptInModel:
    return ConceptInModel(
        group_size=len(cluster.neurons),
        neurons=[GroupNeuron(layer=n.layer, channel=n.channel, support=n.support) for n in cluster.neurons],
        group_stability=cluster.uncertainty.group_stability if cluster.uncertainty else None,
        causal=causal_effect(cluster),
    )


def _section(key: str, hierarchy: Hierarchy, baseline: bool) -> ModelSection:
    target = hierarchy.models.target
    return ModelSection(
        key=key,
        architecture=target.architecture,
        weights=target.weights,
        model_id=target.model_id,
        layers=[layer.name for layer in hierarchy.layers],
        hierarchy=artifacts.model_prefix(key) + artifacts.HIERARCHY,
        comparison=None if baseline else artifacts.comparison_key(key),
    )


def models_document(store: Store, options: PipelineOptions) -> MultiModelResult:
    """One concept tree (the baseline's, which every model shares), a section per model."""
    keys = [model.resolved_key for model in options.target_models()]
    # One tree: the comparisons (written first) checked that every model has the baseline's.
    hierarchies = {key: model_hierarchy(store, key) for key in keys}
    clusters = {key: {c.id: c for c in h.clusters} for key, h in hierarchies.items()}
    base = hierarchies[keys[0]]
    return MultiModelResult(
        schema_version="1.0",
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        generator=f"{base.generator.name} {base.generator.version}",
        baseline=keys[0],
        models=[_section(key, hierarchies[key], key == keys[0]) for key in keys],
        cost=CostNote(
            once=[s.name for s in stages.PIPELINE if not s.per_model and not s.several_models],
            per_model=[s.name for s in stages.PIPELINE if s.per_model],
            note=COST_NOTE,
        ),
        concepts=[
            ConceptAcrossModels(
                id=cluster.id,
                level=cluster.level,
                parent=cluster.parent,
                children=cluster.children,
                size=cluster.size,
                label=cluster.label,
                models={key: _concept_in(clusters[key][cluster.id]) for key in keys},
            )
            for cluster in base.clusters
        ],
    )


def compare_stage(job: StageJob, shard: int | None = None) -> None:
    """The stage table's entry (shared/pipeline/stages.py), for a job of several models: its
    comparisons, then models.json."""
    if not job.options.multi_model:
        return
    write_comparisons(job.store, job.options)
    write_model(job.store, artifacts.MODELS, models_document(job.store, job.options))


def model_hierarchy(store: Store, key: str) -> Hierarchy:
    """Model `key`'s hierarchy.json in a multi-model job's store."""
    return read_hierarchy(model_store(store, key))
