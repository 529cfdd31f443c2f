"""Does the target model see the images as it was trained to? Checked where images carry class
labels (their target-model class index): a model trained at 64 px and fed ImageNet's 256/224
transform recognises almost none of them, and every neuron group then describes a model fed the
wrong input. Nothing else in a run would say so.

- The accuracy comes free: the activation pass runs the whole model, and each shard keeps its
  top-1 classes (`activations/{shard}.npz`, `predicted`).
- Where it is below `PROBE_BELOW`, one batch of labelled images (`PROBE_IMAGES`) goes through
  the model at the likely input sizes (the images' own, 32 ... 299 px, the model's default)
  and normalisations (ImageNet's, none): a transform far better on that batch (`GAP`) names the
  cause and the exact `--preprocessing` that fixes it.
- Near chance with no better transform, the likely cause is a head that does not match the
  labels (labels beyond its outputs, or predictions of classes no image is labelled with).

`run_input_check` writes `input_check.json` (hierarchy.json's `warnings`); `enforce` fails the
run with the same message under `strict`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from neuron_atlas_client.contracts.hierarchy import TargetRecord
from neuron_atlas_client.contracts.input_check import InputCheck, ProbeResult, RunWarning, WarningKind
from neuron_atlas_client.contracts.models import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from neuron_atlas_client.errors import InputCheckFailed
from neuron_atlas_client.options import PipelineOptions
from neuron_core.active_sets import read_predictions
from neuron_core.architectures import Architecture
from neuron_core.hooks import preprocess
from neuron_core.target_model import LoadedModel
from shared.pipeline.ingest import decode_image
from shared.pipeline.progress import NoProgress, Progress
from shared.storage import artifacts
from shared.storage.stores import Store, get_json

log = logging.getLogger(__name__)

PROBE_IMAGES = 16  # about 6 passes of them at 224 px in all: a second or two on a CPU
PROBE_SIZES = (32, 64, 96, 128, 160, 224, 256, 299)
GAP = 0.2  # a transform this much better on the probe's images names a cause
PROBE_BELOW = 1.0 - GAP  # at or above, no transform could be GAP better: no probe
FLOOR = 0.05  # below this share right, a model does not recognise the images, whatever chance is
NO_NORMALISATION = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
STEP = "input check"


def class_index(value: object) -> int:
    """A label's class index, or -1 where it is none (a name, a negative number, nothing)."""
    try:
        number = int(str(value).strip())
    except ValueError:
        return -1
    return number if number >= 0 else -1


def run_input_check(
    store: Store,
    options: PipelineOptions,
    load_target: Callable[[], LoadedModel],
    read_bytes: Callable[[dict[str, Any]], bytes],
    progress: Progress | None = None,
) -> InputCheck | None:
    """Check the job's labelled images (after the activation shards) into `input_check.json`;
    None, and nothing written, where no image carries a label. The model is loaded only for a
    probe."""
    manifest = get_json(store, artifacts.MANIFEST)
    given = {e["id"]: e["label"] for e in manifest["images"] if str(e.get("label") or "").strip()}
    if not given:
        return None
    predictions = read_predictions(store)  # the decoded images
    ids = [i for i in given if i in predictions]
    if not ids:  # no labelled image decoded: nothing to check
        return None
    labels = np.array([class_index(given[i]) for i in ids], dtype=np.int64)
    predicted = np.array([predictions[i] for i in ids], dtype=np.int64)
    target = (
        artifacts.read_model(store, artifacts.TARGET, TargetRecord)
        if store.exists(artifacts.TARGET)
        else None
    )
    num_classes = target.num_classes if target else None
    known = labels >= 0
    warnings: list[RunWarning] = []
    probe: list[ProbeResult] = []
    accuracy: float | None = None
    chance: float | None = None
    probe_images = 0
    if not known.any():
        shown = ", ".join(repr(str(given[i])) for i in ids[:3])
        warnings.append(
            RunWarning(
                kind="labels",
                message=f"None of the {len(ids)} class labels is a class index ({shown}), so the "
                "target model's accuracy on them could not be checked.",
                fix="Give each image the target model's class index (0 to its outputs - 1) as its "
                'label, e.g. --labels FILE with {"cats/001.jpg": 3}, or the API spec\'s labels.',
            )
        )
    elif num_classes is not None and (beyond := labels[labels >= num_classes]).size:
        warnings.append(_head_beyond(int(beyond.size), int(known.sum()), int(labels.max()), num_classes))
    else:
        labels, predicted = labels[known], predicted[known]
        ids = [i for i, k in zip(ids, known, strict=True) if k]
        chance = 1.0 / (num_classes or len(set(labels.tolist())))
        measured = bool((predicted >= 0).all())
        accuracy = float(np.mean(predicted == labels)) if measured else None
        if accuracy is None or accuracy < PROBE_BELOW:
            rows = _spread(len(ids), PROBE_IMAGES)
            entries = {e["id"]: e for e in manifest["images"]}
            probe = _probe(
                load_target(),
                [entries[ids[r]] for r in rows],
                labels[rows],
                read_bytes,
                options.batch_size,
                progress or NoProgress(),
                # the transform used was measured on these images already, by the activation pass
                float(np.mean(predicted[rows] == labels[rows])) if measured else None,
            )
            probe_images = len(rows)
            if accuracy is None:  # no predictions kept: the probe's measure of the transform used
                accuracy = probe[0].top1_accuracy
        warning = _diagnose(
            accuracy, chance, labels, predicted if measured else None, probe, len(ids), probe_images
        )
        if warning:
            warnings.append(warning)
    check = InputCheck(
        labelled_images=int(known.sum()),
        top1_accuracy=None if accuracy is None else round(accuracy, 4),
        chance=None if chance is None else round(chance, 6),
        probe_images=probe_images,
        probe=probe,
        warnings=warnings,
    )
    artifacts.write_model(store, artifacts.INPUT_CHECK, check)
    return check


def enforce(check: InputCheck | None, options: PipelineOptions) -> None:
    """Under `strict`, a warning fails the run, with the warning's own words."""
    if options.strict and check is not None and check.warnings:
        raise InputCheckFailed(
            " ".join(w.message for w in check.warnings), " ".join(w.fix for w in check.warnings)
        )


def _spread(n: int, k: int) -> list[int]:
    """k rows spread evenly over n (folders sorted by class give every class its share)."""
    return sorted({int(x + 0.5) for x in np.linspace(0, n - 1, min(n, k))})


def candidates(used: Preprocessing, default: Preprocessing, own_size: int) -> list[Preprocessing]:
    """The transforms a probe tries, the one used first: the images' own size, the usual
    training sizes and the model's default, each resized to the crop (no border cut off), with
    the normalisation used."""
    sizes = [own_size, *PROBE_SIZES]
    tried = [used, default] + [
        used.model_copy(update={"input_size": s, "resize": s}) for s in sizes if 16 <= s <= 1024
    ]
    return list(dict.fromkeys(tried))  # Preprocessing is frozen: hashable, duplicates dropped


def normalisations(used: Preprocessing) -> list[Preprocessing]:
    """The transform used with ImageNet's normalisation and with none, where those differ."""
    options = [(IMAGENET_MEAN, IMAGENET_STD), NO_NORMALISATION]
    return [
        used.model_copy(update={"mean": mean, "std": std})
        for mean, std in options
        if (tuple(used.mean), tuple(used.std)) != (mean, std)
    ]


def _probe(
    target: LoadedModel,
    entries: Sequence[Mapping[str, Any]],
    labels: np.ndarray,
    read_bytes: Callable[[dict[str, Any]], bytes],
    batch_size: int,
    progress: Progress,
    used_accuracy: float | None = None,
) -> list[ProbeResult]:
    """Top-1 accuracy of one batch of labelled images at each candidate size, then at other
    normalisations of the best size and of the size used; `used_accuracy`: the transform used,
    already measured on these images."""
    started = time.perf_counter()
    images = [decode_image(read_bytes(dict(e))) for e in entries]
    used = target.preprocessing
    own = int(np.median([min(image.size) for image in images]))
    default = Architecture.parse(target.architecture).preprocessing(target.module)
    sizes = candidates(used, default, own)
    progress.start(STEP, len(sizes) + 1)  # each size, then the normalisations
    results: dict[Preprocessing, float] = {}
    if used_accuracy is not None:
        results[used] = used_accuracy
    for prep in sizes:
        if prep not in results:
            _try(target, images, labels, prep, batch_size, results, required=prep == used)
        progress.advance(STEP)
    best = max(results, key=lambda p: results[p])  # the first of equals: the one used wins ties
    for prep in dict.fromkeys([*normalisations(best), *normalisations(used)]):
        if prep not in results:
            _try(target, images, labels, prep, batch_size, results)
    progress.finish(STEP)
    log.info(
        "input check: %d transforms on %d images in %.1f s",
        len(results),
        len(images),
        time.perf_counter() - started,
    )
    return [ProbeResult(preprocessing=p, top1_accuracy=round(a, 4)) for p, a in results.items()]


def _try(
    target: LoadedModel,
    images: Sequence[Any],
    labels: np.ndarray,
    prep: Preprocessing,
    batch_size: int,
    results: dict[Preprocessing, float],
    required: bool = False,
) -> None:
    """The accuracy at `prep` into `results`; a model that cannot take that input (a ViT at
    another size) is left out, unless it is the transform used."""
    try:
        right = 0
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                batch = preprocess(images[start : start + batch_size], prep).to(target.device)
                output = target.module(batch)
                output = output[0] if isinstance(output, tuple) else output
                right += int((output.argmax(dim=1).cpu().numpy() == labels[start : start + batch_size]).sum())
    except Exception as exc:  # any failure at another size means: not a candidate
        if required:
            raise
        log.debug("input check: %s does not run at %s: %s", target.architecture, prep, exc)
        return
    results[prep] = right / len(images)


def _diagnose(
    accuracy: float | None,
    chance: float,
    labels: np.ndarray,
    predicted: np.ndarray | None,
    probe: Sequence[ProbeResult],
    n: int,
    probe_images: int,
) -> RunWarning | None:
    if accuracy is None:
        return None
    measured = (
        f"Top-1 accuracy of the target model on the {n} labelled images is {accuracy:.2f} "
        f"(chance {chance:.2g})"
    )
    if probe:
        used, best = probe[0], max(probe, key=lambda r: r.top1_accuracy)
        if best.top1_accuracy >= used.top1_accuracy + GAP:
            return _better_transform(measured, used, best, probe_images)
    near_chance = accuracy <= max(chance + min(chance, 0.1), FLOOR)
    if not near_chance:
        return None
    if predicted is not None and np.mean(~np.isin(predicted, np.unique(labels))) > 0.5:
        foreign = float(np.mean(~np.isin(predicted, np.unique(labels))))
        return RunWarning(
            kind="head",
            message=f"{measured}, and {foreign:.0%} of its predictions are classes no image is "
            f"labelled with (the labels use {len(np.unique(labels))} classes): the model's head does "
            "not match the labels.",
            fix="Give the checkpoint trained on these classes (--weights FILE.safetensors; its head's "
            "size is read off the file), or labels that are this model's class indices.",
        )
    return RunWarning(
        kind="accuracy",
        message=f"{measured}: near chance, and no other input size or normalisation did better on a "
        "probe. Every neuron group then describes a model that does not recognise these images.",
        fix="Check that each label is the model's class index for that image (the order of its "
        "training classes), that --weights is the trained checkpoint, and that --preprocessing is "
        "the transform it was trained with.",
    )


def _head_beyond(beyond: int, labelled: int, largest: int, outputs: int) -> RunWarning:
    return RunWarning(
        kind="head",
        message=f"{beyond} of the {labelled} labelled images have a class index beyond the model's "
        f"{outputs} outputs (the largest label is {largest}): the model's head does not match the "
        "labels, so its accuracy on them could not be checked.",
        fix="Give the checkpoint trained on these classes (--weights FILE.safetensors; its head's size "
        f"is read off the file), or labels that are this model's class indices (0 to {outputs - 1}).",
    )


def _better_transform(measured: str, used: ProbeResult, best: ProbeResult, probe_images: int) -> RunWarning:
    a, b = used.preprocessing, best.preprocessing
    size_differs = (a.input_size, a.resize) != (b.input_size, b.resize)
    norm_differs = (a.mean, a.std) != (b.mean, b.std)
    kind: WarningKind = (
        "preprocessing"
        if size_differs and norm_differs
        else "input-size"
        if size_differs
        else "normalisation"
    )
    cause = {
        "input-size": f"the input size: the model was likely trained on {_size(b)} inputs, not {_size(a)}",
        "normalisation": f"the normalisation: the model was likely trained with {_norm(b)}, not {_norm(a)}",
        "preprocessing": f"the input size and normalisation: the model was likely trained on "
        f"{_size(b)} inputs with {_norm(b)}, not {_size(a)} with {_norm(a)}",
    }[kind]
    flag = json.dumps(b.model_dump(mode="json"), separators=(", ", ": "))
    return RunWarning(
        kind=kind,
        message=f"{measured} with the input used ({_describe(a)}); on a probe of {probe_images} of "
        f"them, {_describe(b)} gives {best.top1_accuracy:.2f} against {used.top1_accuracy:.2f}. Likely "
        f"cause: {cause}. Every neuron group then describes a model fed the wrong input.",
        fix=f"Run again with --preprocessing '{flag}' (the API: this object as options.preprocessing, "
        "or the registered model's preprocessing).",
    )


def _norm(prep: Preprocessing) -> str:
    pair = (tuple(prep.mean), tuple(prep.std))
    if pair == (IMAGENET_MEAN, IMAGENET_STD):
        return "ImageNet normalisation"
    if pair == NO_NORMALISATION:
        return "no normalisation"
    return f"mean {list(prep.mean)} and std {list(prep.std)}"


def _size(prep: Preprocessing) -> str:
    """'32 px', or '224 px crop of a 256 px resize'."""
    resized = "" if prep.resize == prep.input_size else f" crop of a {prep.resize} px resize"
    return f"{prep.input_size} px{resized}"


def _describe(prep: Preprocessing) -> str:
    return f"{_size(prep)}, {_norm(prep)}"
