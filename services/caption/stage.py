"""Caption stage over a job's store: one `captions/{shard}.json` per shard of images."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from PIL import Image

from services.caption.captioning import Captioner
from shared import artifacts
from shared.storage import Store, put_json


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


def write_caption_shard(
    store: Store,
    shard: int,
    model_id: str | None,
    rows: list[dict[str, str]],
    skipped: list[dict[str, str]],
) -> None:
    """`skipped` lists the shard's images that failed to decode; they are in no later stage."""
    put_json(store, artifacts.captions_key(shard), {"model": model_id, "captions": rows, "skipped": skipped})
