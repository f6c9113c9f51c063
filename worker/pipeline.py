"""One job: decode → embed → predict (or generate) → encode. No Redis, no Celery."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sam2fleet.shared.images import decode_rgb
from sam2fleet.shared.schemas import JobResult, JobSpec
from sam2fleet.worker.embed_cache import Embedding
from sam2fleet.worker.masks import auto_records, prompt_records
from sam2fleet.worker.model import SegmentationModel

Checkpoint = Callable[[str], None]


@dataclass(frozen=True)
class Encoded:
    """A job's image, already encoded in one forward pass with other jobs' images
    (cross-job batching, worker/batching.py)."""

    embedding: Embedding
    decode_s: float
    embed_s: float  # the whole batched pass: how long this job waited for it
    batch_size: int


def _no_checkpoint(stage: str) -> None:
    return None


def run_job(
    model: SegmentationModel,
    spec: JobSpec,
    image_id: str,
    load_image: Callable[[], bytes],
    *,
    max_pixels: int,
    queue_s: float = 0.0,
    checkpoint: Checkpoint = _no_checkpoint,
    cache_key: tuple[str, ...] | None = None,
    encoded: Encoded | None = None,
) -> dict[str, Any]:
    """`checkpoint(stage)` is called at each safe point between stages; it may raise
    to stop the job there (cancellation) or inject a fault (tests). With a
    `cache_key`, a prompt job on an image whose embedding the model still holds
    skips fetching, decoding and encoding the image altogether; so does one whose
    image was `encoded` in a batch already."""
    timings: dict[str, Any] = {
        "queue_s": queue_s,
        "decode_s": 0.0,
        "embed_s": 0.0,
        "predict_s": 0.0,
        "encode_s": 0.0,
    }

    def decode() -> np.ndarray:
        started = time.perf_counter()
        image = decode_rgb(load_image(), max_pixels=max_pixels)
        timings["decode_s"] = _since(started)
        checkpoint("decoded")
        return image

    if spec.mode == "prompt":
        height, width = _set_embedding(model, timings, decode, checkpoint, cache_key, encoded)
        checkpoint("embedded")
        mark = time.perf_counter()
        objects = model.predict(spec.prompts, spec.multimask)
        timings["predict_s"] = _since(mark)
        mark = time.perf_counter()
        masks = prompt_records(objects, spec.output.format, spec.output.min_score)
        notes = model.notes(None)
    else:
        image = decode()
        height, width = image.shape[0], image.shape[1]
        mark = time.perf_counter()
        anns, embed_s = model.generate(spec.auto, image, on_crop=lambda: checkpoint("embed"))
        timings["embed_s"], timings["predict_s"] = embed_s, _since(mark) - embed_s
        mark = time.perf_counter()
        masks = auto_records(anns, spec.output.format, spec.output.min_score)
        notes = model.notes(spec.auto)
    timings["encode_s"] = _since(mark)

    result = JobResult.model_validate(
        {
            "image": {"image_id": image_id, "width": width, "height": height},
            "model": model.stamp.model_dump(),
            "masks": masks,
            "timings": timings,
            "notes": notes,
        }
    )
    return result.model_dump(mode="json", exclude_none=True)


def _set_embedding(
    model: SegmentationModel,
    timings: dict[str, Any],
    decode: Callable[[], np.ndarray],
    checkpoint: Checkpoint,
    cache_key: tuple[str, ...] | None,
    encoded: Encoded | None,
) -> tuple[int, int]:
    """Make the job's image embedding the model's current one: from a batched pass,
    from the cache, or from the encoder now. The image's (height, width)."""
    if encoded is not None:
        size = model.use(encoded.embedding)
        timings["decode_s"], timings["embed_s"] = encoded.decode_s, encoded.embed_s
        timings["embedding_cache_hit"] = False
        timings["encoder_batch_size"] = encoded.batch_size
        checkpoint("embed")  # the same safe point as an image encoded alone
        return size
    if cache_key is not None:
        cached = model.restore(cache_key)
        timings["embedding_cache_hit"] = cached is not None
        if cached is not None:
            return cached
    image = decode()
    mark = time.perf_counter()
    checkpoint("embed")
    model.embed(image, cache_key)
    timings["embed_s"] = _since(mark)
    timings["encoder_batch_size"] = 1
    return image.shape[0], image.shape[1]


def _since(mark: float) -> float:
    return round(time.perf_counter() - mark, 6)
