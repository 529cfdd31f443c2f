"""Caption stage over a job's store: one `captions/{shard}.json` per shard of images.
`run_caption_shard` is the one entry, for the Celery task and the embedded runner alike."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from PIL import Image

from neuron_atlas_client.options import PipelineOptions
from services.caption.captioning import Captioner
from shared.pipeline.ingest import DECODE_PIXEL_BUDGET, DecodedShard, decode_shard, undecoded_shard
from shared.pipeline.stage_job import StageJob
from shared.storage import artifacts
from shared.storage.stores import Store, put_json


def caption_rows(
    image_ids: Sequence[str],
    file_names: Sequence[str],
    images: Sequence[Image.Image],
    provided: Mapping[str, str],
    captioner: Captioner | None,
    batch_size: int,
    max_new_tokens: int,
) -> list[dict[str, str]]:
    """A caption per image: the one the submission brought, else the model's."""
    missing = [i for i, name in enumerate(file_names) if name not in provided]
    generated: dict[int, str] = {}
    if missing:
        if captioner is None:
            raise ValueError("images without captions need a captioner")
        texts = captioner.caption([images[i] for i in missing], batch_size, max_new_tokens)
        generated = dict(zip(missing, texts, strict=True))
    return [
        {"image_id": image_id, "caption": generated[i], "source": "model"}
        if i in generated
        else {"image_id": image_id, "caption": provided[file_names[i]], "source": "provided"}
        for i, image_id in enumerate(image_ids)
    ]


def shard_to_caption(
    manifest: dict[str, Any],
    shard: int,
    shard_size: int,
    read_bytes: Callable[[dict[str, Any]], bytes],
    pixel_budget: int = DECODE_PIXEL_BUDGET,
) -> DecodedShard:
    """The shard as the caption worker needs it: decoded when some image lacks a caption, else
    without pixels and without reading a byte. The activation branch decodes every image and
    decides which are usable (`artifacts.write_undecodable`), so nothing is lost by not looking."""
    entries = artifacts.shard_entries(manifest, shard, shard_size)
    if all(entry["caption"] is not None for entry in entries):
        return undecoded_shard(manifest, shard, shard_size)
    return decode_shard(manifest, shard, shard_size, read_bytes, pixel_budget)


def write_caption_shard(
    store: Store,
    shard: int,
    model_id: str | None,
    rows: list[dict[str, str]],
    skipped: list[dict[str, str]],
) -> None:
    """`skipped` lists the shard's images that failed to decode; they are in no later stage."""
    put_json(store, artifacts.captions_key(shard), {"model": model_id, "captions": rows, "skipped": skipped})


def run_caption_shard(
    store: Store,
    manifest: dict[str, Any],
    shard: DecodedShard,
    options: PipelineOptions,
    captioner: Callable[[], Captioner],
) -> int:
    """Caption the shard's decodable images that brought no caption and write
    `captions/{shard}.json`; `captioner` is called only when one is needed. Returns how many
    images the shard held (decodable or not), for progress."""
    provided = {e["file_name"]: e["caption"] for e in shard.entries if e["caption"] is not None}
    needs_model = any(e["caption"] is None for e in shard.kept)
    rows = caption_rows(
        [e["id"] for e in shard.kept],
        [e["file_name"] for e in shard.kept],
        shard.images,
        provided,
        captioner() if needs_model else None,
        options.caption_batch_size,
        options.max_new_tokens,
    )
    # The captioner is named when any image of the job needed it, whichever shard this is.
    job_needs_model = any(e["caption"] is None for e in manifest["images"])
    write_caption_shard(
        store, shard.index, options.caption_model if job_needs_model else None, rows, shard.skipped
    )
    return len(shard.entries)


def caption_stage(job: StageJob, shard: int | None) -> int:
    """The stage table's entry (shared/pipeline/stages.py): caption one shard; images it held, for
    progress."""
    assert shard is not None, "the caption stage runs per shard"
    images = job.shard(shard, shard_to_caption)
    return run_caption_shard(
        job.store, job.manifest(), images, job.options, lambda: job.resource("captioner")
    )
