"""Put a result next to the model's other records in MLflow: `neuron-atlas mlflow-log OUT_DIR|JOB_ID`,
or `log_result` / `log_job` from Python.

One MLflow run gets hierarchy.json and the explorer report as artifacts, the job's options as
params, summary metrics (concepts, reliable and selective shares, label quality, the share of
tested concepts with a specific causal effect) and tags naming the target model and its sha256.
A comparison folder (`neuron-atlas compare ... --out DIR`) is logged by `log_comparison`: its
summary metrics, comparison.json, and both models as tags. A multi-model result (or job) is
logged as its baseline's result, plus each comparison's summary metrics prefixed
`comparison.<key>.` and its comparison.json under `comparisons/`.
The tracking server is `--tracking-uri`, else MLFLOW_TRACKING_URI, as MLflow's own tools read it.
Needs `mlflow-skinny` (the `mlflow` extra). The explorer report is written by the main
distribution (`neuron-atlas`), which registers its writer under the entry point group
`neuron_atlas_client.report` (it needs numpy and the atlas code, which this one does not carry):
without it, the run gets everything but `explorer/`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING

from neuron_atlas_client.contracts.api import ArtifactsPublic
from neuron_atlas_client.contracts.comparison import Comparison
from neuron_atlas_client.contracts.hierarchy import Hierarchy
from neuron_atlas_client.contracts.multi_model import MultiModelResult
from neuron_atlas_client.errors import InputError, MissingExtra

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

PARAM_MAX = 6000  # MLflow's limit on a param's value
# What the explorer needs besides hierarchy.json and activations/ (thumbnails are not logged: the
# logged report shows file names in their place).
REPORT_ARTIFACTS = ("hierarchy.json", "manifest.json", "spec.json", "groups.json", "labelling.json")
REPORT_ENTRY_POINTS = "neuron_atlas_client.report"
ReportWriter = Callable[[Path], Path]  # a result folder -> the report's index.html, written into it


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def summary_metrics(hierarchy: Hierarchy) -> dict[str, float]:
    """The numbers to compare runs by; a share that could not be computed is left out."""
    metrics: dict[str, float] = {
        "concepts": float(len(hierarchy.clusters)),
        "levels": float(len(hierarchy.levels)),
        "images": float(len(hierarchy.images)),
        "skipped_files": float(len(hierarchy.skipped)),
        "memberships": float(sum(len(c.neurons) for c in hierarchy.clusters)),
    }
    quality = hierarchy.labelling.quality
    if quality is not None and quality.mean is not None:
        metrics["label_quality_mean"] = quality.mean
    if hierarchy.uncertainty is not None:
        summary = hierarchy.uncertainty.summary
        if summary.reliable_share is not None:
            metrics["reliable_share"] = summary.reliable_share
        if summary.selective_share is not None:
            metrics["selective_share"] = summary.selective_share  # selectivity test, BH-controlled
        if summary.mean_group_stability is not None:
            metrics["mean_group_stability"] = summary.mean_group_stability
        if summary.mean_clustering_stability is not None:
            metrics["mean_clustering_stability"] = summary.mean_clustering_stability
        if summary.specificity.tested:
            metrics["specific_share"] = summary.specificity.significant / summary.specificity.tested
    used = hierarchy.labelling.accounting
    metrics["llm_requests"] = float(used.requests)
    metrics["llm_tokens"] = float(used.total_tokens)
    if used.cost_usd is not None:
        metrics["llm_cost_usd"] = used.cost_usd
    return metrics


def options_params(hierarchy: Hierarchy) -> dict[str, str]:
    params = {}
    for name, value in hierarchy.options.model_dump(mode="json").items():
        text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        params[name] = text[:PARAM_MAX]
    return params


def model_tags(hierarchy: Hierarchy, model_sha256: str | None) -> dict[str, str]:
    """The target model's id, where its weights came from, and its sha256: given, or read from
    the `--weights` file when it is on this machine."""
    weights = hierarchy.options.weights
    if model_sha256 is None and weights and Path(weights).is_file():
        model_sha256 = sha256_of(Path(weights))
    return {
        "neuron_atlas.model_id": hierarchy.options.model,
        "neuron_atlas.model_architecture": hierarchy.models.target.architecture,
        "neuron_atlas.model_weights": hierarchy.models.target.weights[:PARAM_MAX],
        "neuron_atlas.model_sha256": model_sha256 or "unknown",
        "neuron_atlas.generator": f"{hierarchy.generator.name} {hierarchy.generator.version}",
    }


def require_mlflow(command: str = "MLflow logging", install: str = "neuron-atlas-client[mlflow]") -> None:
    """A one-line error, before any work, when the `mlflow` extra is not installed."""
    try:
        import mlflow.tracking  # noqa: F401
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "mlflow":
            raise
        raise MissingExtra(
            f"{command} needs the MLflow client, which is not installed.",
            f"pip install '{install}'",
        ) from None


def mlflow_client(tracking_uri: str | None) -> MlflowClient:
    """MLflow's client for `tracking_uri`; its refusal of the URI as an InputError."""
    require_mlflow()
    from mlflow.tracking import MlflowClient

    with mlflow_refusals(tracking_uri):
        return MlflowClient(tracking_uri=tracking_uri)


@contextlib.contextmanager
def mlflow_refusals(tracking_uri: str | None) -> Iterator[None]:
    """An MlflowException (a refused store, a server that says no) as an InputError that says
    what MLflow refused, in one line, and what to do."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        where = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "MLflow's default"
        text = " ".join(str(getattr(exc, "message", exc)).split())
        first = text.split(". ", 1)[0].rstrip(".")
        if "filesystem tracking backend" in text:
            raise InputError(
                f"MLflow refused the tracking URI {where}: {first}.",
                "Log to a tracking server (--tracking-uri http://HOST:5000) or a database "
                "(--tracking-uri sqlite:///mlflow.db); MLflow opens a file store such as ./mlruns "
                "only with MLFLOW_ALLOW_FILE_STORE=true.",
            ) from None
        raise InputError(
            f"MLflow refused ({where}): {first[:300]}.",
            "Check --tracking-uri (or MLFLOW_TRACKING_URI), --run-id and that the tracking server answers.",
        ) from None


def new_run(client: MlflowClient, experiment: str, run_name: str | None) -> str:
    """A new run in `experiment` (created if missing); its id."""
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    return str(client.create_run(experiment_id, run_name=run_name).info.run_id)


def log_result(
    out_dir: str | os.PathLike[str],
    *,
    tracking_uri: str | None = None,
    experiment: str = "neuron-atlas",
    run_id: str | None = None,
    run_name: str | None = None,
    model_sha256: str | None = None,
    tags: dict[str, str] | None = None,
    report: ReportWriter | None = None,
) -> str:
    """Log a finished result folder to an MLflow run (a new one, or `run_id`); returns the run id.
    `report` writes the explorer report (default: the installed writer, `report_writer()`)."""
    client = mlflow_client(tracking_uri)
    from mlflow.entities import Metric, Param, RunTag

    folder = Path(out_dir)
    path = folder / "hierarchy.json"
    several = _multi_model(folder)
    if several is not None and not path.is_file():  # a multi-model result: its baseline's
        path = folder / next(m.hierarchy for m in several.models if m.key == several.baseline)
    if not path.is_file():
        raise InputError(
            f"{folder} holds no hierarchy.json.", "Point mlflow-log at a finished OUT_DIR or a job id."
        )
    hierarchy = Hierarchy.model_validate_json(path.read_bytes())
    write_report = report or report_writer()
    index = write_report(folder) if write_report is not None else None
    with mlflow_refusals(tracking_uri):
        run_id = run_id or new_run(client, experiment, run_name)
        now = int(time.time() * 1000)
        all_tags = {
            **model_tags(hierarchy, model_sha256),
            "neuron_atlas.result_sha256": sha256_of(path),
            **(tags or {}),
        }
        metrics = summary_metrics(hierarchy)
        comparisons = _job_comparisons(folder, several)
        for key, (comparison, _) in comparisons.items():
            all_tags[f"neuron_atlas.comparison.{key}.architecture"] = comparison.b.architecture
            for name, value in comparison_metrics(comparison).items():
                metrics[f"comparison.{key}." + name.removeprefix("comparison.")] = value
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
            params=[Param(k, v) for k, v in options_params(hierarchy).items()],
            tags=[RunTag(k, v) for k, v in all_tags.items()],
        )
        client.log_artifact(run_id, str(path))
        if index is not None:
            client.log_artifacts(run_id, str(index.parent), artifact_path="explorer")
        for _, comparison_path in comparisons.values():
            client.log_artifact(run_id, str(comparison_path), artifact_path="comparisons")
        with contextlib.redirect_stdout(sys.stderr):  # MLflow prints the run's links: not our stdout
            client.set_terminated(run_id)
    return run_id


def _multi_model(folder: Path) -> MultiModelResult | None:
    path = folder / "models.json"
    return MultiModelResult.model_validate_json(path.read_bytes()) if path.is_file() else None


def _job_comparisons(folder: Path, several: MultiModelResult | None) -> dict[str, tuple[Comparison, Path]]:
    """A multi-model result's comparisons of its baseline with each other model, by key."""
    found: dict[str, tuple[Comparison, Path]] = {}
    for model in several.models if several is not None else []:
        if model.comparison is not None:
            path = folder / model.comparison
            found[model.key] = (Comparison.model_validate_json(path.read_bytes()), path)
    return found


def report_writer() -> ReportWriter | None:
    """The explorer report's writer that an installed distribution registers, or None."""
    for entry in entry_points(group=REPORT_ENTRY_POINTS):
        writer: ReportWriter = entry.load()
        return writer
    return None


def report_artifacts(found: ArtifactsPublic) -> list[str]:
    """Of a job's artifacts, those that hierarchy.json's logging and the explorer report read
    (a multi-model job's: those of each model's folder, models.json and its comparisons)."""
    names = {a.name for a in found.artifacts}

    def wanted(name: str) -> bool:
        if name == "models.json" or (name.startswith("comparisons/") and name.endswith(".json")):
            return True
        if name.startswith("models/"):
            name = name.split("/", 2)[-1]
        return name in REPORT_ARTIFACTS or name.startswith("activations/")

    return [n for n in names if wanted(n)]


def job_tags(tags: dict[str, str] | None, job_id: str, gateway: str) -> dict[str, str]:
    """A suite job's run is tagged with the job id and the gateway it came from."""
    return {**(tags or {}), "neuron_atlas.job_id": job_id, "neuron_atlas.gateway": gateway}


def comparison_metrics(comparison: Comparison) -> dict[str, float]:
    """A comparison's summary numbers (docs/comparison.md), per layer prefixed `layer.NAME.`; a
    number that does not exist (no group in A anywhere, other layers) is left out."""
    summary = comparison.summary
    metrics: dict[str, float] = {
        "comparison.images": float(comparison.images),
        "comparison.concepts": float(summary.concepts),
        "comparison.unchanged": float(summary.unchanged),
        "comparison.changed": float(summary.changed),
        "comparison.vanished": float(len(summary.vanished)),
        "comparison.appeared": float(len(summary.appeared)),
        "comparison.tests": float(summary.tests),
        "comparison.significant_changes": float(summary.significant_changes),
    }
    if summary.min_kept_share is not None:
        metrics["comparison.min_kept_share"] = summary.min_kept_share
    if summary.mean_jaccard is not None:
        metrics["comparison.mean_jaccard"] = summary.mean_jaccard
    for layer in comparison.layers or []:
        prefix = f"comparison.layer.{layer.layer}."
        metrics[prefix + "lost"] = float(layer.lost)
        metrics[prefix + "gained"] = float(layer.gained)
        metrics[prefix + "significant_down"] = float(layer.significant_down)
        if layer.mean_jaccard is not None:
            metrics[prefix + "mean_jaccard"] = layer.mean_jaccard
    return metrics


def log_comparison(
    folder: str | os.PathLike[str],
    *,
    tracking_uri: str | None = None,
    experiment: str = "neuron-atlas",
    run_id: str | None = None,
    run_name: str | None = None,
) -> str:
    """Log a comparison folder (`neuron-atlas compare ... --out DIR`) to an MLflow run: its summary
    metrics, comparison.json as an artifact, both models as tags; returns the run id."""
    client = mlflow_client(tracking_uri)
    from mlflow.entities import Metric, RunTag

    path = Path(folder) / "comparison.json"
    comparison = Comparison.model_validate_json(path.read_bytes())
    tags = {"neuron_atlas.comparison_sha256": sha256_of(path)}
    for side, record in (("a", comparison.a), ("b", comparison.b)):
        tags[f"neuron_atlas.comparison.{side}.source"] = record.source[:PARAM_MAX]
        tags[f"neuron_atlas.comparison.{side}.architecture"] = record.architecture
        tags[f"neuron_atlas.comparison.{side}.sha256"] = record.sha256 or "unknown"
    with mlflow_refusals(tracking_uri):
        run_id = run_id or new_run(client, experiment, run_name)
        now = int(time.time() * 1000)
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, now, 0) for k, v in comparison_metrics(comparison).items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        client.log_artifact(run_id, str(path))
        with contextlib.redirect_stdout(sys.stderr):  # MLflow prints the run's links: not our stdout
            client.set_terminated(run_id)
    return run_id
