"""`neuron-atlas remote ...` (or `neuron-atlas-remote ...` with only the client installed): drive a
Neuron Atlas gateway from a shell or a CI step.

The gateway is `--url` or NEURON_ATLAS_URL; the key is NEURON_ATLAS_API_KEY only (a flag would
leave it in shell history and process lists). Results go to stdout: readable on a terminal, one
JSON document per line when piped. Progress goes to stderr as a bar on a terminal, and so does
each wait before a retry (a quota's Retry-After can be a minute).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel

from neuron_atlas_client import (
    ApiError,
    Client,
    ClientError,
    ConfigError,
    JobFailed,
    JobPublic,
    TransportError,
    WaitTimeout,
)
from neuron_atlas_client._core import KEY_ENV, URL_ENV, RetryNotice
from neuron_atlas_client.comparison_gate import add_gate_flags, gate_failures, print_summary
from neuron_atlas_client.contracts.api import WEBHOOK_EVENTS
from neuron_atlas_client.contracts.models import ModelRecord
from neuron_atlas_client.errors import InputError
from neuron_atlas_client.option_flags import add_option_flags, options_from_args

# Exit statuses a CI step can branch on (docs/integrations.md).
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
EXIT_JOB_FAILED, EXIT_JOB_CANCELLED, EXIT_TIMEOUT = 5, 6, 7
EXIT_AUTH, EXIT_NOT_FOUND, EXIT_CONFLICT, EXIT_UNAVAILABLE = 8, 9, 10, 11


def add_remote_parser(commands: Any) -> None:
    """`remote` as a subcommand of another CLI (`neuron-atlas remote`)."""
    remote = commands.add_parser(
        "remote",
        help="submit and follow jobs on a Neuron Atlas gateway (key: NEURON_ATLAS_API_KEY)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_remote_arguments(remote)


def build_parser() -> argparse.ArgumentParser:
    """`neuron-atlas-remote`: the same commands, for an install of the client alone."""
    parser = argparse.ArgumentParser(
        prog="neuron-atlas-remote", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_remote_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_remote(build_parser().parse_args(argv))


def add_remote_arguments(remote: argparse.ArgumentParser) -> None:
    remote.add_argument("--url", help=f"the gateway, e.g. http://localhost:8000 (default: ${URL_ENV})")
    remote.add_argument(
        "--json", action="store_true", help="JSON lines on stdout even on a terminal (default when piped)"
    )
    remote.add_argument(
        "--no-key",
        action="store_true",
        help=f"send no key: only for a development gateway with GATEWAY_AUTH_DISABLED (else set ${KEY_ENV})",
    )
    sub = remote.add_subparsers(dest="remote_command", required=True, metavar="COMMAND")

    submit = sub.add_parser(
        "submit", help="submit a folder, an archive, or a bucket prefix (imports/TENANT/...)"
    )
    submit.add_argument("source", metavar="FOLDER|ARCHIVE|PREFIX")
    submit.add_argument(
        "--captions-json", type=Path, metavar="FILE", help="JSON object: file name -> caption"
    )
    submit.add_argument(
        "--callback",
        action="append",
        default=[],
        metavar="URL[=EVENT,...]",
        help=f"webhook to call when the job ends (events: {', '.join(WEBHOOK_EVENTS)}; default all)",
    )
    submit.add_argument("--idempotency-key", metavar="KEY", help="default: a new one per submit")
    submit.add_argument("--wait", action="store_true", help="then wait for the job (exit status as `wait`)")
    _add_wait_flags(submit)
    add_option_flags(submit, api=True)

    for name, text in (("status", "the job's status and progress"), ("cancel", "cancel the job")):
        sub.add_parser(name, help=text).add_argument("job_id")

    wait = sub.add_parser("wait", help="wait until the job ends; non-zero unless it succeeded")
    wait.add_argument("job_id")
    _add_wait_flags(wait)

    get = sub.add_parser("get", help="the job's hierarchy.json, one concept, or one neuron")
    get.add_argument("job_id")
    what = get.add_mutually_exclusive_group()
    what.add_argument("--concept", metavar="CLUSTER_ID", help="one concept (cluster)")
    what.add_argument("--neuron", metavar="LAYER/CHANNEL", help="the concepts whose group holds a neuron")
    what.add_argument(
        "--models",
        action="store_true",
        help="a multi-model job's models.json: each model's groups per concept",
    )
    get.add_argument("--model", metavar="KEY", help="a multi-model job's model KEY's hierarchy.json")
    get.add_argument("-o", "--output", type=Path, metavar="FILE", help="write to FILE, not stdout")

    artifacts = sub.add_parser("artifacts", help="list the job's artifacts, or download them")
    artifacts.add_argument("job_id")
    artifacts.add_argument("--download", type=Path, metavar="DIR", help="download into DIR")
    artifacts.add_argument("--name", action="append", metavar="NAME", help="only these (repeatable)")

    listing = sub.add_parser("list", help="the tenant's jobs, newest first")
    listing.add_argument("--limit", type=int, default=20, metavar="N")

    compare = sub.add_parser(
        "compare",
        help="compare two finished jobs over the same images (A the reference, B the candidate), "
        "or show a multi-model job's own comparison (A_JOB alone); exit 1 when B breaks a gate "
        "(docs/comparison.md)",
    )
    compare.add_argument("job_a", metavar="A_JOB")
    compare.add_argument("job_b", metavar="B_JOB", nargs="?", help="omitted: A_JOB's own comparison")
    compare.add_argument(
        "--model", metavar="KEY", help="A_JOB alone: its baseline against model KEY (default: the second)"
    )
    compare.add_argument("--alpha", type=float, metavar="A", help="test level (default: A's alpha)")
    compare.add_argument("-o", "--output", type=Path, metavar="FILE", help="write comparison.json to FILE")
    add_gate_flags(compare)

    _add_models_parser(sub)


def _add_models_parser(sub: Any) -> None:
    models = sub.add_parser(
        "models",
        help="the tenant's model registry: upload, import, list, show, layers, delete",
        description="Register your own model once, then explain it with `remote submit --model-id ID`.",
    )
    commands = models.add_subparsers(dest="models_command", required=True, metavar="COMMAND")
    upload = commands.add_parser(
        "upload", help="register a .safetensors state dict (a worker checks it loads and runs first)"
    )
    upload.add_argument("weights", type=Path, metavar="FILE.safetensors")
    imported = commands.add_parser(
        "import",
        help="register a model from the bucket (a prefix under imports/TENANT/), MLflow "
        "(models:/NAME/VERSION, runs:/ID/PATH) or the hub (a repository id)",
    )
    imported.add_argument("kind", choices=("bucket", "mlflow", "hub"))
    imported.add_argument("uri", metavar="URI")
    for parser in (upload, imported):
        parser.add_argument(
            "--architecture",
            required=True,
            metavar="ARCH",
            help="torchvision:NAME, timm:NAME or a torchvision name",
        )
        parser.add_argument(
            "--num-classes", type=int, metavar="N", help="outputs of the head (default: read off the weights)"
        )
        parser.add_argument("--class-names", metavar="A,B,...", help="one name per output")
        parser.add_argument(
            "--preprocessing", metavar="JSON", help='e.g. \'{"input_size": 224, "mean": [0.5, 0.5, 0.5]}\''
        )
    listing = commands.add_parser("list", help="the tenant's models")
    listing.add_argument("--limit", type=int, metavar="N")
    for name, text in (
        ("show", "one model: architecture, sha256, parameters, classes, preprocessing"),
        ("layers", "the model's readable layers (name, channels, read by default)"),
        ("delete", "remove the model and its weights"),
    ):
        commands.add_parser(name, help=text).add_argument("model_id", metavar="MODEL_ID")


def _add_wait_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=float, metavar="SECONDS", help="give up after this long (exit 7)")
    parser.add_argument("--poll", type=float, default=2.0, metavar="SECONDS", help="poll interval (2)")


class Output:
    """Readable on a terminal; JSON lines when piped (or with --json)."""

    def __init__(self, as_json: bool, out: TextIO = sys.stdout) -> None:
        self.json, self.out = as_json, out

    def model(self, value: BaseModel, readable: Callable[[], str] | None = None) -> None:
        if self.json or readable is None:
            self.out.write(value.model_dump_json(exclude_none=True) + "\n")
        else:
            self.out.write(readable() + "\n")
        self.out.flush()


def describe(job: JobPublic) -> str:
    parts = [f"{job.id}  {job.status}  stage {job.stage}  {job.images} images"]
    progress = ", ".join(f"{stage} {p.done}/{p.total}" for stage, p in job.progress.items())
    if progress:
        parts.append(f"  progress: {progress}")
    if job.error is not None:
        parts.append(f"  error: {job.error.title}" + (f": {job.error.detail}" if job.error.detail else ""))
        if job.error.fix:
            parts.append(f"  what to do: {job.error.fix}")
    return "\n".join(parts)


def _fraction(job: JobPublic) -> tuple[int, int]:
    done = sum(min(p.done, p.total) for p in job.progress.values())
    return done, max(1, sum(p.total for p in job.progress.values()))


@contextmanager
def progress_reporter(output: Output, bar: bool) -> Iterator[Callable[[JobPublic], None]]:
    """A rich progress bar on stderr (terminal), or a JSON line per change on stdout (piped).
    Without rich (the client installed alone), a plain line on stderr per change."""
    if bar and importlib.util.find_spec("rich") is None:
        yield _plain_progress()
        return
    if bar:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(), console=_stderr_console(), transient=True,
        ) as progress:  # fmt: skip
            task = progress.add_task("queued", total=1)

            def update(job: JobPublic) -> None:
                done, total = _fraction(job)
                progress.update(task, description=f"{job.status}: {job.stage}", completed=done, total=total)

            yield update
        return
    last: list[str] = []

    def emit(job: JobPublic) -> None:
        line = job.model_dump_json(exclude_none=True)
        if output.json and (not last or last[0] != line):
            last[:] = [line]
            output.out.write(line + "\n")
            output.out.flush()

    yield emit


def _plain_progress() -> Callable[[JobPublic], None]:
    last: list[str] = []

    def show(job: JobPublic) -> None:
        done, total = _fraction(job)
        line = f"{job.status}: {job.stage} {100 * done // total}%"
        if last != [line]:
            last[:] = [line]
            print(line, file=sys.stderr, flush=True)

    return show


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def say_retry(notice: RetryNotice) -> None:
    """Each wait before a retry, on stderr: a quota's Retry-After is not a silent minute."""
    print(f"neuron-atlas remote: {notice.describe()}", file=sys.stderr, flush=True)


def check_before_sending(args: argparse.Namespace) -> None:
    """What can be told without the gateway: no URL, no key, a local weights file."""
    if not (args.url or os.environ.get(URL_ENV)):
        raise ConfigError(f"no gateway URL: pass --url URL or set {URL_ENV}.")
    if not os.environ.get(KEY_ENV) and not args.no_key:
        raise ConfigError(
            f"no API key, so nothing was sent: set {KEY_ENV} (read from the environment only, so it "
            "stays out of shell history; a key comes from `python -m services.gateway.keys TENANT` on "
            "the gateway's side). For a development gateway with GATEWAY_AUTH_DISABLED, pass --no-key."
        )
    if args.remote_command == "submit" and args.weights is not None:
        # Refused rather than uploaded behind the user's back: a registered model is a resource of
        # its own (up to GATEWAY_MAX_MODEL_BYTES, checked by a worker, kept until deleted), and an
        # upload per submission would fill the registry with copies.
        raise ConfigError(
            "--weights names a file on this machine, and the gateway never reads one. Register it "
            f"once: neuron-atlas remote models upload {args.weights} --architecture "
            f"{args.model or 'ARCH'}; then submit with --model-id MODEL_ID."
        )


def run_remote(args: argparse.Namespace) -> int:
    as_json = args.json or not sys.stdout.isatty()
    output = Output(as_json)
    try:
        check_before_sending(args)
        with Client(args.url, on_retry=say_retry) as client:
            return _dispatch(client, args, output)
    except JobFailed as exc:
        _error(str(exc), exc.job.error.fix if exc.job.error else None)
        return EXIT_JOB_CANCELLED if exc.job.status == "cancelled" else EXIT_JOB_FAILED
    except WaitTimeout as exc:
        _error(str(exc), "Wait longer (--timeout), or check the workers.")
        return EXIT_TIMEOUT
    except ApiError as exc:
        _error(str(exc))
        return exit_status_of(exc.status)
    except TransportError as exc:
        _error(f"the gateway could not be reached: {exc}", f"Check --url / ${URL_ENV}.")
        return EXIT_UNAVAILABLE
    except (ConfigError, InputError) as exc:
        _error(str(exc.problem) if isinstance(exc, InputError) else str(exc))
        return EXIT_USAGE
    except ClientError as exc:
        _error(str(exc))
        return EXIT_ERROR


def exit_status_of(status: int) -> int:
    """An API error's HTTP status, as an exit status."""
    if status in (401, 403):
        return EXIT_AUTH
    if status == 404:
        return EXIT_NOT_FOUND
    if status == 409:
        return EXIT_CONFLICT
    if status == 429 or status >= 500:
        return EXIT_UNAVAILABLE
    return EXIT_USAGE


def _error(message: str, fix: str | None = None) -> None:
    print(f"neuron-atlas remote: error: {message}", file=sys.stderr)
    if fix:
        print(f"  what to do: {fix}", file=sys.stderr)


def _dispatch(client: Client, args: argparse.Namespace, output: Output) -> int:
    command = args.remote_command
    if command == "submit":
        job = client.submit(
            args.source,
            options_from_args(args),
            captions=json.loads(args.captions_json.read_text()) if args.captions_json else None,
            callbacks=[_callback(text) for text in args.callback],
            idempotency_key=args.idempotency_key,
        )
        output.model(job, lambda: f"submitted {job.id} ({job.images} images, {job.skipped} skipped)")
        return _wait(client, job.id, args, output) if args.wait else EXIT_OK
    if command == "status":
        job = client.job(args.job_id)
        output.model(job, lambda: describe(job))
        return EXIT_OK
    if command == "wait":
        return _wait(client, args.job_id, args, output)
    if command == "cancel":
        job = client.cancel(args.job_id)
        output.model(job, lambda: describe(job))
        return EXIT_OK
    if command == "get":
        return _get(client, args, output)
    if command == "artifacts":
        if args.download:
            for path in client.download_artifacts(args.job_id, args.download, args.name):
                output.out.write((json.dumps({"path": str(path)}) if output.json else str(path)) + "\n")
            return EXIT_OK
        found = client.artifacts(args.job_id)
        output.model(found, lambda: "\n".join(f"{a.name}\t{a.url}" for a in found.artifacts))
        return EXIT_OK
    if command == "list":
        for listed in client.jobs(limit=args.limit):
            output.model(listed, _row(listed))
        return EXIT_OK
    if command == "models":
        return _models(client, args, output)
    if command == "compare":
        return _compare(client, args, output)
    raise ConfigError(f"unknown command {command}")


def _compare(client: Client, args: argparse.Namespace, output: Output) -> int:
    """The comparison on the gateway (or a multi-model job's own), then the gates on its
    comparison.json."""
    if args.job_b is None:
        comparison = client.job_comparison(args.job_a, args.model)
        if args.output:
            args.output.write_text(comparison.model_dump_json(indent=1) + "\n")
        output.model(
            comparison, lambda: f"job {args.job_a}: {comparison.a.source} against {comparison.b.source}"
        )
    else:
        if args.model:
            raise ConfigError("--model names a model of one multi-model job: pass A_JOB alone")
        created = client.compare(args.job_a, args.job_b, args.alpha)
        comparison = client.comparison(created.id)
        if args.output:
            args.output.write_text(comparison.model_dump_json(indent=1) + "\n")
        output.model(created, lambda: f"comparison {created.id}")
    if not output.json:
        print_summary(comparison, output.out)
    failures = gate_failures(comparison, args)
    for failure in failures:
        _error(f"gate failed: {failure}")
    return EXIT_ERROR if failures else EXIT_OK


def _model_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if args.num_classes is not None:
        fields["num_classes"] = args.num_classes
    if args.class_names:
        fields["class_names"] = [name.strip() for name in args.class_names.split(",")]
    if args.preprocessing:
        try:
            fields["preprocessing"] = json.loads(args.preprocessing)
        except json.JSONDecodeError:
            raise ConfigError(
                '--preprocessing is not JSON; e.g. \'{"input_size": 224, "mean": [0.5, 0.5, 0.5]}\'.'
            ) from None
    return fields


def _describe_model(model: ModelRecord) -> str:
    classes = f"{model.num_classes} classes" + (
        f" ({', '.join(model.class_names)})" if model.class_names else ""
    )
    return (
        f"{model.id}  {model.architecture}  {classes}  {model.parameters:,} parameters\n"
        f"  sha256 {model.sha256}  from {model.source.kind}  created {model.created_at}"
    )


def _models(client: Client, args: argparse.Namespace, output: Output) -> int:
    command = args.models_command
    if command in ("upload", "import"):
        fields = _model_fields(args)
        if command == "upload":
            if not args.weights.is_file():
                raise ConfigError(f"{args.weights} is not a file.")
            model = client.upload_model(args.weights, args.architecture, **fields)
        else:
            model = client.import_model(args.architecture, args.kind, args.uri, **fields)
        output.model(model, lambda: "registered " + _describe_model(model))
        return EXIT_OK
    if command == "list":
        for count, listed in enumerate(client.models()):
            if args.limit is not None and count >= args.limit:
                break
            output.model(listed, functools.partial(_describe_model, listed))
        return EXIT_OK
    if command == "show":
        model = client.model(args.model_id)
        output.model(model, lambda: _describe_model(model))
        return EXIT_OK
    if command == "layers":
        layers = client.model_layers(args.model_id)
        rows = [
            f"{layer.name}\t{layer.channels}\t{'default' if layer.default else ''}".rstrip()
            for layer in layers.layers
        ]
        output.model(layers, lambda: "\n".join(rows))
        return EXIT_OK
    if command == "delete":
        client.delete_model(args.model_id)
        output.out.write(
            (json.dumps({"deleted": args.model_id}) if output.json else f"deleted {args.model_id}") + "\n"
        )
        return EXIT_OK
    raise ConfigError(f"unknown command models {command}")


def _row(job: JobPublic) -> Callable[[], str]:
    return lambda: f"{job.id}  {job.status:<10}  {job.stage:<13}  {job.created_at}"


def _callback(text: str) -> dict[str, Any]:
    url, _, events = text.partition("=")
    return {"url": url, **({"events": events.split(",")} if events else {})}


def _wait(client: Client, job_id: str, args: argparse.Namespace, output: Output) -> int:
    bar = sys.stderr.isatty() and not output.json
    with progress_reporter(output, bar) as report:
        job = client.wait(
            job_id,
            timeout_s=args.timeout,
            poll_interval_s=args.poll,
            on_progress=report,
            raise_on_failure=False,
        )
    if not output.json:
        output.model(job, lambda: describe(job))
    elif bar:
        output.model(job)
    if job.status == "failed":
        _error(f"job {job.id} failed", job.error.fix if job.error else None)
        return EXIT_JOB_FAILED
    if job.status == "cancelled":
        _error(f"job {job.id} was cancelled")
        return EXIT_JOB_CANCELLED
    return EXIT_OK


def _get(client: Client, args: argparse.Namespace, output: Output) -> int:
    value: BaseModel
    if args.concept:
        value = client.concept(args.job_id, args.concept)
    elif args.neuron:
        layer, _, channel = args.neuron.rpartition("/")
        if not layer or not channel.isdigit():
            raise ConfigError(f"--neuron takes LAYER/CHANNEL, e.g. layer4/17, not {args.neuron!r}")
        value = client.neuron(args.job_id, layer, int(channel))
    elif args.models:
        value = client.job_models(args.job_id)
    else:
        value = client.hierarchy(args.job_id, args.model)
    text = value.model_dump_json()
    if args.output:
        args.output.write_text(text + "\n")
    else:
        output.out.write(text + "\n")
    return EXIT_OK


__all__ = ["add_remote_parser", "build_parser", "main", "run_remote"]

if __name__ == "__main__":
    sys.exit(main())
