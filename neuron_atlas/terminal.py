"""What the CLI shows on a terminal: per-stage progress bars, a short tree of the result, and
the reports of what a run used, how it labelled and how far to trust it."""

from __future__ import annotations

import sys
from pathlib import Path
from types import TracebackType
from typing import TextIO

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from neuron_atlas_client.contracts.hierarchy import Cluster, Hierarchy
from neuron_atlas_client.contracts.labels import Labelling


class TerminalProgress:
    """Progress bars on stderr when it is a terminal; silent otherwise (pipes, CI, files)."""

    def __init__(self, enabled: bool) -> None:
        self._bars = (
            Progress(
                TextColumn("{task.description:<12}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                transient=False,
                console=None,
            )
            if enabled
            else None
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> TerminalProgress:
        if self._bars:
            self._bars.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bars:
            self._bars.stop()

    def start(self, stage: str, total: int) -> None:
        if self._bars and total > 0:
            self._tasks[stage] = self._bars.add_task(stage, total=total)

    def advance(self, stage: str, amount: int = 1) -> None:
        if self._bars and stage in self._tasks:
            self._bars.advance(self._tasks[stage], amount)

    def finish(self, stage: str) -> None:
        if self._bars and stage in self._tasks:
            task = self._tasks[stage]
            self._bars.update(task, completed=self._bars.tasks[task].total)


def specificity_words(cluster: Cluster) -> str:
    """The specificity test in a few words: 'specific +2.8 p=0.001', 'not specific p=0.4',
    'not tested: 3 images', 'not tested: budget'."""
    if cluster.uncertainty is None:
        return ""
    state = cluster.uncertainty.specificity
    result = state.result
    if result is None:
        return state.note if state.status in ("budget", "too_few_images") else ""
    verdict = "specific" if result.significant else "not specific"
    return f"{verdict} {result.effect:+.2f} p={result.p_value:.2g}"


def evidence(cluster: Cluster) -> str:
    """', 12 reliable, stable 0.97, specific +2.8 p=0.001' when the uncertainty stage ran."""
    if cluster.uncertainty is None:
        return ""
    evidences = [n.evidence for n in cluster.neurons if n.evidence]
    if evidences and all(e.reliable is None for e in evidences):
        parts = ["too few images to tell reliability"]
    else:
        parts = [f"{sum(1 for e in evidences if e.reliable)} reliable"]
    # An empty group is "stable" in every resample (Jaccard of two empty sets reads 1): that
    # says nothing, so it is not shown.
    if cluster.uncertainty.group_stability is not None and cluster.neurons:
        parts.append(f"stable {cluster.uncertainty.group_stability:.2f}")
    if words := specificity_words(cluster):
        parts.append(words)
    return ", " + ", ".join(parts)


def group_size(cluster: Cluster, intersect: bool) -> str:
    """'12 neurons'; an empty group under the intersect rule says why it is empty."""
    if not cluster.neurons and intersect and cluster.children:
        return "no neuron common to all its children"
    return f"{len(cluster.neurons)} neurons"


def difference(cluster: Cluster) -> str:
    """'  [+3 neurons: snowy forest]': what a child adds to its parent's group, and its words.
    A child that adds no neuron shows nothing: the words alone would suggest neurons to match."""
    if not cluster.difference_neurons or not cluster.difference_description:
        return ""
    return f"  [+{len(cluster.difference_neurons)} neurons: {cluster.difference_description}]"


def print_tree(hierarchy: Hierarchy, levels: int, stream: TextIO = sys.stdout, max_children: int = 8) -> None:
    """The top `levels` levels: label, images, group size and what sets each child apart."""
    clusters = {c.id: c for c in hierarchy.clusters}
    top = max(c.level for c in clusters.values())
    lowest = max(1, top - levels + 1)
    intersect = hierarchy.options.group_rule == "intersect"

    def show(cluster: Cluster, depth: int) -> None:
        print(
            f"{'  ' * depth}{cluster.id}  {cluster.label!r}  "
            f"({cluster.size} images, {group_size(cluster, intersect)}{evidence(cluster)})"
            f"{difference(cluster)}",
            file=stream,
        )
        if cluster.level > lowest:
            children = sorted(cluster.children, key=lambda c: -clusters[c].size)
            for child in children[:max_children]:
                show(clusters[child], depth + 1)
            if len(children) > max_children:
                print(f"{'  ' * (depth + 1)}… {len(children) - max_children} more", file=stream)

    for root in sorted((c for c in clusters.values() if c.level == top), key=lambda c: -c.size):
        show(root, 0)


def print_run_report(hierarchy: Hierarchy, out_dir: Path, stream: TextIO) -> None:
    """What a run used and skipped, how it labelled, how far to trust it, and where it is."""
    models = hierarchy.models
    captioned = models.captioner.images_captioned
    n = len(hierarchy.images)
    print(f"images: {n} used, {len(hierarchy.skipped)} skipped", file=stream)
    print(f"captions: {n - captioned} provided, {captioned} by {models.captioner.id}", file=stream)
    print(f"embedder: {models.embedder.id} ({models.embedder.source})", file=stream)
    print(f"target: {models.target.architecture}, weights: {models.target.weights}", file=stream)
    for skipped in hierarchy.skipped:
        print(f"skipped {skipped.file_name}: {skipped.reason}", file=stream)
    print_labelling_report(hierarchy.labelling, stream)
    print_uncertainty_report(hierarchy, stream)
    for warning in hierarchy.warnings or []:
        print(f"WARNING ({warning.kind}): {warning.message}\n  what to do: {warning.fix}", file=stream)
    print(f"result: {out_dir / 'hierarchy.json'}", file=stream)


def print_uncertainty_report(hierarchy: Hierarchy, stream: TextIO) -> None:
    if hierarchy.uncertainty is None:
        return
    summary, pruning = hierarchy.uncertainty.summary, hierarchy.uncertainty.pruning

    def share(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.0%}"

    stability = summary.mean_group_stability
    clustering = summary.mean_clustering_stability
    precision = hierarchy.uncertainty.method.pass_precision
    passes = f"; model passes in {precision}" if precision else ""
    specific = summary.specificity
    untested = specific.not_tested_budget + specific.not_tested_too_few_images
    print(
        f"uncertainty: {summary.memberships} memberships, {share(summary.reliable_share)} reliable "
        f"({share(summary.too_few_images_share)} in clusters too small to tell), "
        f"{share(summary.selective_share)} selective (more active in the cluster than in the rest), "
        f"{summary.generic_memberships} generic (no more active there than elsewhere); "
        f"group stability {'n/a' if stability is None else f'{stability:.2f}'}, clustering "
        f"stability {'n/a' if clustering is None else f'{clustering:.2f}'}; specific causal effect "
        f"(on held-out images, Benjamini-Hochberg across concepts) in {specific.significant} of "
        f"{specific.tested} concepts tested ({untested} not tested: {specific.not_tested_budget} for "
        f"the budget, {specific.not_tested_too_few_images} with too few images); difference neurons "
        f"that mark the child in {summary.difference.significant} of {summary.difference.tested} "
        f"children tested{passes}",
        file=stream,
    )
    model = hierarchy.uncertainty.method.model_uncertainty
    if model is not None:
        calibrated = f"; {model.calibration.finding}" if model.calibration else ""
        print(
            f"dropout passes: {model.samples} per image on {model.images} sampled images, read as "
            f"{model.interpretation}{calibrated}",
            file=stream,
        )
    if pruning:
        print(pruning.verdict.sentence, file=stream)


def print_labelling_report(labelling: Labelling, stream: TextIO) -> None:
    counts = ", ".join(f"{n} {source}" for source, n in sorted(labelling.labels.items()))
    print(f"labels: {counts}", file=stream)
    if labelling.source == "llm":
        spent = labelling.accounting
        cost = f", ${spent.cost_usd:.4f}" if spent.cost_usd is not None else ""
        print(
            f"labelling: {labelling.model} at {labelling.endpoint}, prompts "
            f"{labelling.prompt_version}: {spent.requests} requests, {spent.cache_hits} "
            f"cached, {spent.prompt_tokens}+{spent.completion_tokens} tokens{cost}",
            file=stream,
        )
    quality = labelling.quality
    if quality and quality.mean is not None and quality.min is not None:
        print(
            f"label quality (AUROC vs sibling captions): mean {quality.mean:.3f}, "
            f"min {quality.min:.3f} over {quality.clusters_scored} clusters",
            file=stream,
        )
    for warning in labelling.warnings:
        print(f"warning: {warning}", file=stream)
