"""The pipeline, defined once (docs/architecture.md, 'Stages and their artifacts').

Every stage of a job is a row of `PIPELINE`: its name (the job store's stage, the progress name,
the metrics label), the service whose queue and workers run it, whether it runs once per shard of
images or once per job, its entry (the one function both runners call, `module:function`), the
artifacts it reads and writes, and the stages it waits for. Derived from this table, never
written again:
  - the embedded runner's order (`neuron_atlas.pipeline.run_stages`);
  - the suite's Celery canvas, queues, routes and task names (`shared.jobs.queue`);
  - the job store's stages and the gateway's progress totals (`shared.jobs.jobstore`);
  - the pipeline benchmark, which observes the runner rather than copying it;
  - the stage picture and table in docs/architecture.md (`python -m shared.pipeline.stages`);
  - the test that checks `k8s/` and `docker-compose.yml` run a worker for every service.

This module imports nothing heavy: the gateway reads it (it has no torch), and entries are named
by string for that reason; `entry_function` imports one where a runner needs it.

Adding a stage: a row here, its entry in its service's `stage.py` (signature `(job: StageJob,
shard: int | None) -> int | None`, see `shared.pipeline.stage_job`), and, for a new service, its worker in
`docker-compose.yml` and `k8s/`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Per = Literal["shard", "job"]


@dataclass(frozen=True)
class Stage:
    name: str
    service: str  # the queue and the worker deployment that run it; "gateway": at submission
    per: Per
    entry: str  # "module:function", called by both runners; "" for the gateway's ingest
    task: str  # the Celery task name, `domain.action`
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    after: tuple[str, ...] = ()
    does: str = ""  # one line for the docs' table
    # The entry's own progress step that spans the whole stage, which the suite shows as the
    # stage's progress (the embedded run shows every step on the terminal); "": done or not.
    step: str = ""
    # Runs once per target model of a multi-model job (issue 27), each time over that model's
    # view of the job (`shared.pipeline.model_view`): activations, groups, uncertainty and the
    # hierarchy depend on the model; captions, clusters and labels do not.
    per_model: bool = False
    # Runs only in a job of several models (the job's own comparison); absent from the others.
    several_models: bool = False

    @property
    def queued(self) -> bool:
        """Runs on a worker queue (every stage but the gateway's ingest)."""
        return self.service != "gateway"


PIPELINE: tuple[Stage, ...] = (
    Stage(
        "ingest",
        "gateway",
        "job",
        "",
        "",
        reads=("the images", "metadata.csv/.jsonl", "captions and labels files"),
        writes=("spec.json", "manifest.json", "images/{shard}.zip (suite)"),
        does="find the images, their captions and labels; the job's options",
    ),
    Stage(
        "caption",
        "caption",
        "shard",
        "services.caption.stage:caption_stage",
        "caption.shard",
        reads=("the shard's images without a caption",),
        writes=("captions/{shard}.json",),
        after=("ingest",),
        does="BLIP captions for the images that brought none",
    ),
    Stage(
        "activation",
        "activation",
        "shard",
        "services.activation.stage:activation_stage",
        "activation.shard",
        reads=("every image of the shard",),
        writes=(
            "activations/{shard}.npz",
            "undecodable/{shard}.json",
            "thumbs/{shard}.zip",
            "target.json",
        ),
        after=("ingest",),
        does="the target model's pooled activations, per read layer",
        per_model=True,
    ),
    Stage(
        "embed_cluster",
        "embed_cluster",
        "job",
        "services.embed_cluster.stage:embed_cluster_stage",
        "embed_cluster.run",
        reads=("the usable caption rows",),
        writes=("embeddings.npy", "embedder.json", "partitions.npy"),
        after=("caption", "activation"),
        does="sentence embeddings of the captions; FINCH's hierarchy of clusters",
    ),
    Stage(
        "groups",
        "activation",
        "job",
        "services.activation.stage:groups_stage",
        "activation.groups",
        reads=("partitions.npy", "the activation shards", "the labelled images"),
        writes=("input_check.json (with class labels)", "groups.json"),
        after=("embed_cluster",),
        does="the labelled-image check; each cluster's commonly active neurons, intersected up the tree",
        per_model=True,
    ),
    Stage(
        "labelling",
        "labelling",
        "job",
        "services.labelling.stage:labelling_stage",
        "labelling.label",
        reads=("captions", "embeddings.npy", "partitions.npy", "groups.json"),
        writes=("labels.json", "labelling.json"),
        after=("groups",),
        does="a label per concept from its captions (LLM, or offline)",
        step="labels",
    ),
    Stage(
        "uncertainty",
        "uncertainty",
        "job",
        "services.uncertainty.stage:uncertainty_stage",
        "uncertainty.run",
        reads=(
            "partitions.npy",
            "embeddings.npy",
            "the activation shards",
            "groups.json",
            "manifest.json",
            "the images, for its model passes",
        ),
        writes=("uncertainty.json", "uncertainty_timing.json"),
        after=("groups",),
        does="the evidence: intervals, tests, stability, planned model passes",
        per_model=True,
    ),
    Stage(
        "assemble",
        "labelling",  # light JSON work: it runs on the labelling workers
        "job",
        "shared.pipeline.hierarchy:assemble_stage",
        "pipeline.assemble",
        reads=("every artifact above",),
        writes=("hierarchy.json",),
        after=("labelling", "uncertainty"),
        does="hierarchy.json, validated against its schema",
        per_model=True,
    ),
    Stage(
        "compare",
        "uncertainty",  # the comparison's code and its paired tests live there
        "job",
        "services.uncertainty.multi_model:compare_stage",
        "pipeline.compare",
        reads=("each model's hierarchy.json and activation shards",),
        writes=("comparisons/{key}.json", "models.json"),
        after=("assemble",),
        does="several models only: each model against the first (comparison.json), and one "
        "concept tree with a section per model",
        several_models=True,
    ),
)

STAGE_NAMES: tuple[str, ...] = tuple(stage.name for stage in PIPELINE)
BY_NAME: dict[str, Stage] = {stage.name: stage for stage in PIPELINE}
# Services that run workers, in the table's order (the gateway is not among them).
SERVICES: tuple[str, ...] = tuple(dict.fromkeys(stage.service for stage in PIPELINE if stage.queued))


def active(models: int = 1) -> tuple[Stage, ...]:
    """The stages a job of `models` target models runs: all but the several-model ones for one."""
    return tuple(stage for stage in PIPELINE if models > 1 or not stage.several_models)


def totals(images: int, models: int = 1) -> dict[str, int]:
    """Each active stage's progress total: images for ingest and the per-shard stages (times the
    models, for a per-model one: a shard counts each model's images), 1 for a job stage (whose
    finer steps, where it reports them, replace it as they start)."""
    return {
        stage.name: (images * (models if stage.per_model else 1))
        if stage.per == "shard" or not stage.queued
        else 1
        for stage in active(models)
    }


def waves(models: int = 1) -> list[list[Stage]]:
    """The queued stages of a job of `models` target models in waves: each wave's stages wait
    only for earlier waves', so the stages of one wave may run side by side. Raises on a table
    whose `after` names an unknown stage or makes a cycle."""
    table = active(models)
    names = {stage.name for stage in table}
    for stage in table:
        unknown = set(stage.after) - names
        if unknown:
            raise ValueError(f"stage {stage.name} waits for unknown stages {sorted(unknown)}")
    done = {stage.name for stage in table if not stage.queued}
    left = [stage for stage in table if stage.queued]
    result: list[list[Stage]] = []
    while left:
        wave = [stage for stage in left if set(stage.after) <= done]
        if not wave:
            raise ValueError(f"stages {[s.name for s in left]} wait for each other")
        result.append(wave)
        done |= {stage.name for stage in wave}
        left = [stage for stage in left if stage not in wave]
    return result


def entry_function(stage: Stage) -> Callable[..., Any]:
    """The stage's entry, imported (it pulls in the service's dependencies, torch included)."""
    module, _, function = stage.entry.partition(":")
    return getattr(importlib.import_module(module), function)


# --- the picture and the table in docs/architecture.md ---------------------------------------


def diagram() -> str:
    """A mermaid flowchart of the stages: one box per stage, arrows for `after`."""
    lines = ["```mermaid", "flowchart LR"]
    for stage in PIPELINE:
        title = ", ".join(
            [stage.name]
            + (["per shard"] if stage.per == "shard" else [])
            + (["per model"] if stage.per_model else [])
            + (["several models"] if stage.several_models else [])
        )
        made = ", ".join(artifact.split(" (")[0] for artifact in stage.writes)
        lines.append(f'    {stage.name}["{title}<br/><small>{made}</small>"]')
    for stage in PIPELINE:
        lines += [f"    {before} --> {stage.name}" for before in stage.after]
    lines.append("```")
    return "\n".join(lines)


def table() -> str:
    """The stage table as markdown, in the table's order."""
    rows = [
        "| stage | runs | suite task (queue) | entry | does | reads | writes |",
        "|---|---|---|---|---|---|---|",
    ]
    for stage in PIPELINE:
        runs = "per shard" if stage.per == "shard" else "per job"
        if stage.per_model:
            runs += ", per model"
        if stage.several_models:
            runs += " (several models only)"
        where = "the gateway (HTTP)" if not stage.queued else f"`{stage.task}` (`{stage.service}`)"
        entry = "`neuron_atlas/pipeline.py:ingest` (embedded), `services/gateway/submit.py` (suite)"
        if stage.entry:
            module, _, function = stage.entry.partition(":")
            entry = f"`{module.replace('.', '/')}.py:{function}`"
        rows.append(
            f"| {stage.name} | {runs} | {where} | {entry} | {stage.does} | "
            f"{', '.join(map(_artifact, stage.reads))} | {', '.join(map(_artifact, stage.writes))} |"
        )
    return "\n".join(rows)


def _artifact(text: str) -> str:
    """An artifact's name as code, a description ("the images") as words: `name` (note)."""
    name, _, note = text.partition(" (")
    if " " in name:
        return text
    return f"`{name}` ({note}" if note else f"`{name}`"


MARKERS = {"stage-diagram": diagram, "stage-table": table}


def architecture_text(text: str) -> str:
    """`text` (docs/architecture.md) with what lies between each marker pair regenerated."""
    for marker, render in MARKERS.items():
        begin, end = f"<!-- {marker}: begin", f"<!-- {marker}: end -->"
        head, found, rest = text.partition(begin)
        if not found:
            raise ValueError(f"docs/architecture.md has no {begin} marker")
        comment, _, rest = rest.partition("-->")
        begin += f"{comment}-->"
        _, found, tail = rest.partition(end)
        if not found:
            raise ValueError(f"docs/architecture.md has no {end} marker")
        text = f"{head}{begin}\n{render()}\n{end}{tail}"
    return text


if (
    __name__ == "__main__"
):  # python -m shared.pipeline.stages: regenerate docs/architecture.md's picture and table
    path = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
    path.write_text(architecture_text(path.read_text()))
    print(f"wrote the stage picture and table into {path}")
