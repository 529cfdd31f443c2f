"""The embedded run: every stage in this process, artifacts in a local folder
(docs/architecture.md, 'Two ways to run, one code path').

`run_stages` walks the stage table (shared/pipeline/stages.py) wave by wave and calls each stage's entry,
the same ones the suite's Celery tasks call, over a `LocalJob`, so the two cannot drift. One
difference, on purpose: each shard is decoded once and given to every per-shard entry, where the
suite's parallel branches decode it each.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neuron_atlas_client.contracts.hierarchy import Hierarchy
from neuron_atlas_client.contracts.input_check import RunWarning
from neuron_atlas_client.errors import InputError, ModelLoadError
from neuron_atlas_client.options import PipelineOptions
from neuron_core.target_model import LoadedModel, TargetSpec, target_model
from services.activation.stage import hook_layers
from services.caption.captioning import Captioner
from services.labelling.settings import LabelSettings, get_settings
from services.labelling.stage import check_label_settings
from shared.models.sentence_embedder import Embedder
from shared.pipeline import stages
from shared.pipeline.hierarchy import read_hierarchy
from shared.pipeline.ingest import (
    DecodedShard,
    decode_shard,
    find_caption_file,
    manifest_document,
    read_captions,
    read_label_file,
    read_labels,
    scan_image_folder,
)
from shared.pipeline.model_view import ModelJob, model_store, stage_jobs, write_model_specs
from shared.pipeline.progress import NoProgress, Progress
from shared.pipeline.stage_job import ShardDecoder
from shared.storage import artifacts
from shared.storage.stores import LocalStore, Store, put_json

log = logging.getLogger(__name__)


@dataclass
class Models:
    """Everything loaded and checked before the long work starts, so a typo fails in seconds."""

    target: LoadedModel  # the job's (a multi-model job's baseline)
    captioner: Captioner | None
    embedder: Embedder
    # A multi-model job's target models by key, the baseline's included; empty for one model.
    targets: dict[str, LoadedModel] = field(default_factory=dict)


def ingest(
    store: Store,
    image_dir: Path,
    options: PipelineOptions,
    captions_file: Path | None,
    labels_file: Path | None = None,
) -> dict[str, Any]:
    """Find the images, their captions and class labels; write spec.json and manifest.json.
    Labels come from the metadata file's `label` column, and from `labels_file` (`--labels`),
    which wins."""
    given_labels = read_label_file(labels_file) if labels_file else {}  # a bad file fails first
    records, skipped = scan_image_folder(image_dir, options.max_image_pixels)
    known = {r.file_name for r in records} | {s.file_name for s in skipped}
    source = captions_file or find_caption_file(image_dir)
    provided = read_captions(source) if source else {}
    if source:
        _warn_unmatched("captions", provided, source, image_dir, known)
    labels = read_labels(source) if source else {}
    if labels_file:
        if not set(given_labels) & known:
            raise InputError(
                f"None of the {len(given_labels)} labels in {labels_file} names a file in {image_dir} "
                f"(first: {', '.join(sorted(given_labels)[:3])}).",
                "Use the images' paths relative to IMAGE_DIR as file names (e.g. cats/001.jpg).",
            )
        _warn_unmatched("labels", given_labels, labels_file, image_dir, known)
        labels |= given_labels
    manifest = manifest_document(records, skipped, provided, labels or None)
    put_json(store, artifacts.SPEC, {"options": options.model_dump(mode="json")})
    put_json(store, artifacts.MANIFEST, manifest)
    if options.multi_model:
        write_model_specs(store, options)
    return manifest


def _warn_unmatched(what: str, given: dict[str, str], source: Path, image_dir: Path, known: set[str]) -> None:
    unmatched = sorted(set(given) - known)
    if unmatched:
        log.warning(
            "%d %s in %s name no file in %s (first: %s)",
            len(unmatched),
            what,
            source,
            image_dir,
            ", ".join(unmatched[:3]),
        )


def load_models(options: PipelineOptions, uncaptioned: list[str]) -> Models:
    """Load every model the job needs (each target model of a multi-model job);
    `uncaptioned` names the images that need the captioner."""
    targets: dict[str, LoadedModel] = {}
    for model in options.target_models():
        own = options.for_model(model) if options.multi_model else options
        target = targets[model.resolved_key] = target_model(TargetSpec.of(own))
        with hook_layers(target, own) as reader:
            reader.layer_infos(
                target.device, target.preprocessing.input_size
            )  # a layer that does not run fails now, not after captioning
    target = next(iter(targets.values()))
    captioner = Captioner(options.caption_model, target.device) if uncaptioned else None
    if captioner:
        try:
            captioner.load()
        except ModelLoadError as exc:
            shown = ", ".join(uncaptioned[:3]) + (", …" if len(uncaptioned) > 3 else "")
            raise ModelLoadError(
                f"{len(uncaptioned)} images have no caption ({shown}). {exc.problem}", exc.fix
            ) from None
    embedder = Embedder(options.embed_model, options.device)
    embedder.load()
    return Models(target, captioner, embedder, targets if options.multi_model else {})


def folder_image_reader(image_dir: Path) -> Callable[[dict[str, Any]], bytes]:
    """Bytes of a manifest entry's image in the user's folder (the suite reads the bucket)."""
    return lambda entry: (image_dir / entry["file_name"]).read_bytes()


# `observe(stage, shard)`: a context around each call of a stage's entry (and "decode" around
# each shard's decoding); the pipeline benchmark times the stages with it.
Observer = Callable[[str, int | None], AbstractContextManager[Any]]


@contextmanager
def _unobserved(stage: str, shard: int | None) -> Iterator[None]:
    yield


class LocalJob:
    """The embedded run's `shared.pipeline.stage_job.StageJob`: a local folder, the models loaded up
    front, warnings to the log, progress to the caller (the CLI's terminal)."""

    def __init__(
        self,
        store: Store,
        options: PipelineOptions,
        manifest: dict[str, Any],
        read_image: Callable[[dict[str, Any]], bytes],
        resources: dict[str, Any],
        progress: Progress,
        observe: Observer = _unobserved,
    ) -> None:
        self.store, self.options, self.progress = store, options, progress
        self._manifest, self._read_image, self._resources = manifest, read_image, resources
        self._observe = observe
        self._decoded: DecodedShard | None = None

    def manifest(self) -> dict[str, Any]:
        return self._manifest

    def read_image(self, entry: dict[str, Any]) -> bytes:
        return self._read_image(entry)

    def shard(self, index: int, decoder: ShardDecoder) -> DecodedShard:
        # Decoded once, fully, for every per-shard stage of the wave (a full decode serves any
        # decoder); kept until the next shard's.
        if self._decoded is None or self._decoded.index != index:
            self._decoded = None  # the last shard's pixels go before the next shard's come
            with self._observe("decode", index):
                self._decoded = decode_shard(self._manifest, index, self.options.shard_size, self._read_image)
        return self._decoded

    def resource(self, name: str) -> Any:
        if self._resources.get(name) is None:
            raise ValueError(f"the embedded run has no {name!r} (images without captions need a captioner)")
        return self._resources[name]

    def model_resource(self, name: str, view: ModelJob) -> Any:
        """A multi-model job's resource `name` for one of its models (`shared.pipeline.model_view`)."""
        return self.resource(f"{name}:{view.key}")

    def report(self, name: str, document: dict[str, Any]) -> None:
        pass  # the embedded run's summaries are in hierarchy.json and on the terminal

    def warn(self, warnings: Sequence[RunWarning]) -> None:
        for warning in warnings:
            log.warning(
                "%s\n  what to do: %s",
                warning.message,
                warning.fix,
                extra={"kind": warning.kind, "fix": warning.fix},
            )

    def count_undecodable(self, shard: int, count: int) -> None:
        pass  # undecodable/{shard}.json has them; the run report counts them from there


def run_stages(job: LocalJob, progress: Progress, observe: Observer = _unobserved) -> None:
    """Every queued stage of the table, wave by wave: a wave's per-shard stages shard by shard
    (each shard decoded once for them all), then its per-job stages in the table's order. A
    per-model stage of a multi-model job runs once per model, over that model's view of the job
    (`shared.pipeline.model_view.stage_jobs`)."""
    images = len(job.manifest()["images"])
    models = len(job.options.target_models())
    totals = stages.totals(images, models)
    for wave in stages.waves(models):
        per_shard = [stage for stage in wave if stage.per == "shard"]
        for stage in per_shard:
            progress.start(stage.name, totals[stage.name])
        for index in range(artifacts.shard_count(images, job.options.shard_size) if per_shard else 0):
            for stage in per_shard:
                with observe(stage.name, index):
                    done = sum(
                        stages.entry_function(stage)(view, index)
                        for view in stage_jobs(stage, job, job.model_resource)
                    )
                progress.advance(stage.name, done)
        for stage in per_shard:
            progress.finish(stage.name)
        for stage in wave:
            if stage.per == "job":
                progress.start(stage.name, totals[stage.name])
                with observe(stage.name, None):
                    for view in stage_jobs(stage, job, job.model_resource):
                        stages.entry_function(stage)(view, None)
                progress.finish(stage.name)


def run(
    image_dir: Path,
    out_dir: Path,
    options: PipelineOptions,
    captions_file: Path | None = None,
    progress: Progress | None = None,
    version: str = "0",
    label_settings: LabelSettings | None = None,
    labels_file: Path | None = None,
    models: Models | None = None,
    read_image: Callable[[dict[str, Any]], bytes] | None = None,
    observe: Observer = _unobserved,
) -> Hierarchy:
    """The whole method on one folder of images; writes the artifacts and returns hierarchy.json
    (a multi-model job's baseline's; each model's is under `models/{key}/`).

    `label_settings` default to the environment's (`NEURON_ATLAS_LLM__*`): no endpoint there
    means offline labels. `labels_file`: class labels (`--labels`). `models` (else loaded from
    the options), `read_image` (else the folder's files) and `observe` serve the pipeline
    benchmark."""
    progress = progress or NoProgress()
    label_settings = label_settings or get_settings()
    check_label_settings(label_settings)
    store = LocalStore(out_dir)
    with observe("ingest", None):
        manifest = ingest(store, image_dir, options, captions_file, labels_file)
    if models is None:
        models = load_models(options, [e["file_name"] for e in manifest["images"] if e["caption"] is None])
    resources = {
        "target": models.target,
        "captioner": models.captioner,
        "embedder": models.embedder,
        "labelling": {"settings": label_settings},
        "version": version,
        **{f"target:{key}": target for key, target in models.targets.items()},
    }
    job = LocalJob(
        store, options, manifest, read_image or folder_image_reader(image_dir), resources, progress, observe
    )
    run_stages(job, progress, observe)
    return read_hierarchy(result_store(store, options))


def result_store(store: Store, options: PipelineOptions, key: str | None = None) -> Store:
    """Where a run's hierarchy.json is read: the folder itself, or, for a multi-model run, the
    view of model `key` (default: the baseline) over it."""
    if not options.multi_model:
        return store
    model = next((m for m in options.target_models() if m.resolved_key == key), options.target_models()[0])
    return model_store(store, model.resolved_key)
