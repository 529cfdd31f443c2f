"""`neuron-atlas`: the command line. Results on stdout, progress and errors on stderr.

Exit status: 0 done, 1 unexpected failure, a missing extra (`pip install
'neuron-atlas[mlflow]'`) or a failed gate of `compare` (`neuron_atlas.compare_cli`), 2 bad input
or options (with --strict, also labelled images the model does not recognise as given), 3 a
model could not be loaded, 4 the labelling endpoint failed in strict mode, 130 interrupted.
`remote` adds its own (`neuron_atlas_client.remote_cli`): 5 the job failed, 6 it was cancelled, 7 the
wait timed out, 8 the key was refused, 9 no such job, 10 conflict (e.g. not finished yet), 11 the
gateway is unavailable.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from neuron_atlas.cli_logging import REPORT_LOGGER, configure_cli_logging, json_logs, stderr_stream
from neuron_atlas.compare_cli import add_compare_parser, run_compare
from neuron_atlas.fetch import fetch_models
from neuron_atlas.progress_lines import progress_display
from neuron_atlas.terminal import print_labelling_report, print_run_report, print_tree
from neuron_atlas_client import Client, ClientError
from neuron_atlas_client.errors import (
    InputError,
    LabellingError,
    MissingExtra,
    ModelLoadError,
    NeuronAtlasError,
)
from neuron_atlas_client.mlflow_log import log_comparison, log_result, require_mlflow
from neuron_atlas_client.option_flags import add_option_flags, options_from_args, user_path
from neuron_atlas_client.options import PipelineOptions
from neuron_atlas_client.remote_cli import add_remote_parser, run_remote
from services.labelling.settings import LabelSettings

if TYPE_CHECKING:
    from neuron_atlas_client.contracts.hierarchy import Hierarchy

log = logging.getLogger("neuron_atlas")


def package_version() -> str:
    try:
        return version("neuron-atlas")
    except PackageNotFoundError:
        return "0+unknown"


def _add_label_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "labels",
        "The endpoint and its key come from NEURON_ATLAS_LLM__BASE_URL, __API_KEY, __MODEL, ... "
        "(never put a key on the command line); these flags override them. With no endpoint "
        "the offline labeller writes the labels.",
    )
    group.add_argument(
        "--llm-base-url", metavar="URL", help="OpenAI-compatible endpoint, e.g. http://localhost:11434/v1"
    )
    group.add_argument("--llm-model", metavar="NAME", help="model name at the endpoint")
    group.add_argument("--prompt-version", metavar="V", help="prompt set (default: v1)")
    group.add_argument("--offline-labels", action="store_true", help="offline labels even with an endpoint")
    group.add_argument(
        "--strict-labels", action="store_true", help="fail when the endpoint fails, not fall back"
    )
    group.add_argument("--label-cache", type=user_path, metavar="DIR", help="response cache folder")
    group.add_argument("--no-label-cache", action="store_true", help="neither read nor write the cache")


def label_settings_from_args(args: argparse.Namespace) -> LabelSettings:
    """The environment's labelling settings with the command line's flags on top."""
    flags = {
        "base_url": args.llm_base_url,
        "model": args.llm_model,
        "prompt_version": args.prompt_version,
        "cache_dir": args.label_cache,
        "offline": True if args.offline_labels else None,
        "strict": True if args.strict_labels else None,
        "cache": False if args.no_label_cache else None,
    }
    try:
        return LabelSettings(**{k: v for k, v in flags.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise InputError(
            f"Invalid labelling settings: {problems}.", "Check the NEURON_ATLAS_LLM__* variables and flags."
        ) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neuron-atlas",
        description="Explain what the neurons of a vision model have learned: a hierarchy of "
        "labelled image concepts, each with the neurons its images activate in common.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress, no tree")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the whole pipeline on a folder of images")
    run.add_argument("image_dir", type=user_path, metavar="IMAGE_DIR")
    run.add_argument(
        "--out",
        type=user_path,
        required=True,
        metavar="OUT_DIR",
        help="folder for hierarchy.json and the stage artifacts",
    )
    run.add_argument("--overwrite", action="store_true", help="replace an existing result in OUT_DIR")
    # also after `run` (where users type it); SUPPRESS keeps `neuron-atlas -q run ...` working
    run.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress, no tree"
    )
    run.add_argument(
        "--tree-levels",
        type=int,
        default=2,
        metavar="N",
        help="levels of the tree printed at the end (default: %(default)s)",
    )
    run.add_argument(
        "--captions",
        type=user_path,
        metavar="FILE",
        help="metadata.csv/.jsonl with file_name and caption columns (default: "
        "the folder's own metadata file); images without one are captioned by BLIP",
    )
    run.add_argument(
        "--labels",
        type=user_path,
        metavar="FILE",
        help="class labels: a CSV with file_name,label columns or a JSON object {file_name: label}; "
        "each label is the target model's class index of the image (wins over a metadata label "
        "column). With labels the run checks the model's accuracy on them",
    )
    add_option_flags(run)
    _add_label_options(run)

    relabel = commands.add_parser(
        "relabel",
        help="label a finished result again (other endpoint, model or prompts); "
        "captions, clusters and activations are reused",
    )
    relabel.add_argument("out_dir", type=user_path, metavar="OUT_DIR")
    relabel.add_argument("--tree-levels", type=int, default=2, metavar="N")
    _add_label_options(relabel)

    report = commands.add_parser(
        "report", help="write the explorer (web pages) of a finished result to OUT_DIR/explorer/"
    )
    report.add_argument("out_dir", type=Path, metavar="OUT_DIR")

    sample = commands.add_parser("sample", help="write the generated sample collection")
    sample.add_argument("folder", type=user_path)
    sample.add_argument("--per-concept", type=int, default=8)

    layers = commands.add_parser(
        "layers",
        help="list a model's readable layers (name, channels, read by default) as tab-separated lines",
    )
    layers.add_argument(
        "model", nargs="?", metavar="MODEL", help="torchvision:NAME, timm:NAME or a torchvision name"
    )
    layers.add_argument("--weights", type=user_path, metavar="FILE.safetensors", help="check these load too")
    layers.add_argument("--num-classes", type=int, metavar="N", help="outputs of the head")
    layers.add_argument("--json", action="store_true", help="one JSON document instead of lines")
    layers.add_argument(
        "--list-architectures", choices=("torchvision", "timm"), metavar="ZOO", help="list a zoo's models"
    )

    fetch = commands.add_parser("fetch-models", help="download the default models into their caches")
    fetch.add_argument("--caption-model", default=PipelineOptions().caption_model, metavar="ID_OR_PATH")
    fetch.add_argument(
        "--model", default=PipelineOptions().model, help="torchvision:NAME, timm:NAME or a torchvision name"
    )
    fetch.add_argument("--embed-model", default=PipelineOptions().embed_model, metavar="ID_OR_PATH")

    add_compare_parser(commands)
    add_remote_parser(commands)

    mlflow = commands.add_parser(
        "mlflow-log",
        help="log a result (OUT_DIR, or a suite JOB_ID) to an MLflow run: hierarchy.json and the "
        "explorer as artifacts, options as params, summary metrics, model tags; or a comparison "
        "(compare's --out DIR): its summary metrics and comparison.json",
    )
    mlflow.add_argument("target", metavar="OUT_DIR|JOB_ID|COMPARISON_DIR")
    mlflow.add_argument("--tracking-uri", metavar="URI", help="default: $MLFLOW_TRACKING_URI")
    mlflow.add_argument("--experiment", default="neuron-atlas", help="experiment name (%(default)s)")
    mlflow.add_argument("--run-id", metavar="ID", help="log into this existing run instead of a new one")
    mlflow.add_argument("--run-name", metavar="NAME")
    mlflow.add_argument("--model-sha256", metavar="HEX", help="the checkpoint's sha256, as a tag")
    mlflow.add_argument("--url", help="for a JOB_ID: the gateway (default: $NEURON_ATLAS_URL)")

    demo = commands.add_parser("demo", help="generate the sample and run the pipeline on it")
    demo.add_argument("--out", type=user_path, default=Path("demo-out"))
    demo.add_argument("--tree-levels", type=int, default=2, metavar="N")
    return parser


def _replace_dir(staging: Path, out_dir: Path) -> None:
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.replace(out_dir)


def run_to_folder(
    image_dir: Path,
    out_dir: Path,
    options: PipelineOptions,
    captions: Path | None,
    overwrite: bool,
    quiet: bool,
    label_settings: LabelSettings | None = None,
    labels: Path | None = None,
) -> Hierarchy:
    """Run into a staging folder beside OUT_DIR; only a finished result replaces it. Progress:
    bars on a terminal, log lines elsewhere, none when `quiet`."""
    from neuron_atlas.pipeline import run  # torch: `neuron-atlas --help` must not import it

    out_dir = out_dir.resolve()  # through a symlink: the result replaces the folder it points to
    if ((out_dir / "hierarchy.json").exists() or (out_dir / "models.json").exists()) and not overwrite:
        raise InputError(f"{out_dir} already holds a result.", "Pass --overwrite or choose another --out.")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir} exists and is not a folder.", "Choose another --out.")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        with progress_display(quiet) as progress:
            hierarchy = run(
                image_dir, staging, options, captions, progress, package_version(), label_settings, labels
            )
        _replace_dir(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return hierarchy


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_cli_logging(args.verbose)
    if args.command == "remote":
        return run_remote(args)
    try:
        if args.command == "sample":
            from neuron_atlas.sample import make_sample  # numpy, PIL: off `--help`'s path

            folder = make_sample(args.folder, args.per_concept)
            print(folder)
            return 0
        if args.command == "fetch-models":
            for line in fetch_models(args.caption_model, args.model, args.embed_model):
                print(line)
            return 0
        if args.command == "layers":
            return _layers(args)
        if args.command == "report":
            from services.gateway.explorer.report import write_report  # numpy: off `--help`'s path

            index = write_report(args.out_dir)
            print(index.resolve().as_uri())  # open it in a browser; no server needed
            return 0
        if args.command == "demo":
            return _demo(args)
        if args.command == "mlflow-log":
            return _mlflow_log(args)
        if args.command == "relabel":
            return _relabel(args)
        if args.command == "compare":
            return run_compare(args, package_version())
        options = options_from_args(args)
        hierarchy = run_to_folder(
            args.image_dir,
            args.out,
            options,
            args.captions,
            args.overwrite,
            args.quiet,
            label_settings_from_args(args),
            args.labels,
        )
        explorers = _write_comparison_explorers(args.out) if options.multi_model else {}
        if not args.quiet:
            print_run_report(hierarchy, args.out, stderr_stream())
            print_tree(hierarchy, args.tree_levels, sys.stdout)
            if options.multi_model:
                _print_multi_model(args.out, options, explorers)
        return 0
    except InputError as exc:
        _print_error(exc)
        return 2
    except ModelLoadError as exc:
        _print_error(exc)
        return 3
    except LabellingError as exc:
        _print_error(exc)
        return 4
    except MissingExtra as exc:  # not the input's fault: the installation lacks a part
        _print_error(exc)
        return 1
    except KeyboardInterrupt:
        print("neuron-atlas: interrupted; nothing was written", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`neuron-atlas layers MODEL | head`): stop quietly, like a Unix tool.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _write_comparison_explorers(out_dir: Path) -> dict[str, Path]:
    """Each comparison's explorer pages, `OUT/comparisons/<key>/explorer/` (docs/explorer.md)."""
    from services.gateway.explorer.comparison_report import write_job_comparison_reports  # numpy

    return write_job_comparison_reports(out_dir)


def _print_multi_model(out_dir: Path, options: PipelineOptions, explorers: dict[str, Path]) -> None:
    """A multi-model run: where each model's result and comparison are, and each comparison's
    summary (the tree and report above are the baseline's)."""
    from neuron_atlas_client.comparison_gate import print_summary
    from neuron_atlas_client.contracts.comparison import Comparison

    base, *others = [model.resolved_key for model in options.target_models()]
    stream = stderr_stream()
    print(f"models: {out_dir / 'models.json'} (the tree above is {base}'s, the baseline)", file=stream)
    for key in [base, *others]:
        print(f"  {key}: {out_dir / 'models' / key / 'hierarchy.json'}", file=stream)
    for key in others:
        path = out_dir / "comparisons" / f"{key}.json"
        print(f"\n{base} against {key}: {path}", file=sys.stdout)
        print_summary(Comparison.model_validate_json(path.read_bytes()), sys.stdout)
        if key in explorers:  # open it in a browser, as `compare` prints it
            print(f"explorer ({base} against {key}): {explorers[key].resolve().as_uri()}", file=stream)


def _mlflow_log(args: argparse.Namespace) -> int:
    from services.gateway.explorer.report import write_report  # numpy: off the other commands' path

    require_mlflow("mlflow-log", install="neuron-atlas[mlflow]")  # before a job's artifacts are downloaded

    kwargs: dict[str, Any] = {
        "tracking_uri": args.tracking_uri,
        "experiment": args.experiment,
        "run_id": args.run_id,
        "run_name": args.run_name,
        "model_sha256": args.model_sha256,
        "report": write_report,
    }
    target = Path(args.target).expanduser()
    if (
        target.is_dir()
        and (target / "comparison.json").is_file()
        and not (target / "hierarchy.json").exists()
    ):
        kwargs.pop("model_sha256"), kwargs.pop("report")  # a comparison has neither
        run_id = log_comparison(target, **kwargs)
    elif target.is_dir():
        run_id = log_result(target, **kwargs)
    elif len(args.target) == 32 and args.target.isalnum():
        try:
            with Client(args.url) as client:
                run_id = client.log_to_mlflow(args.target, **kwargs)
        except ClientError as exc:
            raise InputError(
                f"Job {args.target}: {exc}", "Check the job id, --url and NEURON_ATLAS_API_KEY."
            ) from None
    else:
        raise InputError(f"{args.target} is neither a result folder nor a job id.", "Pass OUT_DIR or JOB_ID.")
    print(run_id)
    return 0


def _layers(args: argparse.Namespace) -> int:
    # torch, torchvision: `neuron-atlas --help` must not import them
    from neuron_core.architectures import Architecture, names
    from neuron_core.model_layers import describe_layers
    from neuron_core.target_model import load_target_model

    if args.list_architectures:
        for name in names(args.list_architectures):
            print(f"{args.list_architectures}:{name}")
        return 0
    if not args.model:
        raise InputError("Name a model.", "e.g. neuron-atlas layers timm:convnext_tiny")
    if args.weights:
        target = load_target_model(args.model, str(args.weights), num_classes=args.num_classes)
        module, input_size, architecture = target.module, target.preprocessing.input_size, target.architecture
    else:  # the layers do not depend on the weights: no download, no cache needed
        arch = Architecture.parse(args.model)
        module = arch.build(args.num_classes).eval()
        input_size, architecture = arch.preprocessing(module).input_size, str(arch)
    document = describe_layers(architecture, module, input_size)
    if args.json:
        print(document.model_dump_json(indent=2, exclude_none=True))
    else:
        for layer in document.layers:
            print(f"{layer.name}\t{layer.channels}\t{'default' if layer.default else ''}".rstrip())
    return 0


def _print_error(exc: NeuronAtlasError) -> None:
    if json_logs():  # one record, what to do in its own field
        logging.getLogger(REPORT_LOGGER).error(
            "neuron-atlas: error: %s", exc.problem, extra={"kind": exc.kind, "fix": exc.fix or None}
        )
        return
    print(f"neuron-atlas: error: {exc.problem}", file=sys.stderr)
    if exc.fix:
        print(f"  what to do: {exc.fix}", file=sys.stderr)


def _relabel(args: argparse.Namespace) -> int:
    """New labels for a finished result, in place; the rest of the result is reused."""
    # numpy, scipy, openai: `neuron-atlas --help` must not import them
    from services.labelling.stage import run_relabel
    from shared.pipeline.hierarchy import read_hierarchy
    from shared.storage.stores import LocalStore

    settings = label_settings_from_args(args)
    if not (args.out_dir / "hierarchy.json").is_file():
        raise InputError(
            f"{args.out_dir} holds no hierarchy.json.", "Point relabel at the OUT_DIR of a finished run."
        )
    with progress_display(args.quiet) as progress:
        store = LocalStore(args.out_dir)
        run_relabel(store, package_version(), settings, progress=progress)
        hierarchy = read_hierarchy(store)
    if not args.quiet:
        print_labelling_report(hierarchy.labelling, sys.stderr)
        print(f"result: {args.out_dir / 'hierarchy.json'}", file=sys.stderr)
        print_tree(hierarchy, args.tree_levels, sys.stdout)
    return 0


def _demo(args: argparse.Namespace) -> int:
    """The sample, run with ImageNet weights when cached, else random weights, said plainly."""
    from neuron_atlas.sample import make_sample  # numpy, PIL: off `--help`'s path

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="neuron-atlas-sample-") as tmp:
        sample = make_sample(Path(tmp) / "sample")
        print(
            f"demo: generated {sum(1 for _ in sample.glob('*.png'))} images with captions "
            f"(metadata.csv), so no captioning model is needed",
            file=sys.stderr,
        )
        options = PipelineOptions(allow_random_weights=True)
        print(
            f"demo: default settings; the uncertainty stage plans its model passes within "
            f"--uncertainty-budget {options.uncertainty_budget} (hierarchy.json's uncertainty.plan "
            "says what ran and what did not)",
            file=sys.stderr,
        )
        os.environ.setdefault("NEURON_ATLAS_OFFLINE", "1")  # the demo never reaches for a hub
        hierarchy = run_to_folder(sample, args.out, options, None, True, args.quiet)
    print_run_report(hierarchy, args.out, sys.stderr)
    if "random" in hierarchy.models.target.weights:
        print(
            "demo: NOTE the target model has RANDOM weights (no ImageNet weights in the torch "
            "cache), so its neuron groups show the method, not what a trained ResNet18 learned.",
            file=sys.stderr,
        )
    if not args.quiet:
        print_tree(hierarchy, args.tree_levels, sys.stdout)
    print(f"demo: done in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
