"""A video job on a worker: from the stored video to one record per frame.

The task module hands a job in mode "video" here (`run`). The video is read from
Redis as the decoder needs it, tracked by worker/video_tracker.py, and each frame's
masks are written as soon as SAM 2 yields them (shared/video_records.py
FRAME_SCRIPT: once per frame, counted in the job's progress). Between two frames
the task

- notices a cancellation (the frame write refuses, or the status says so), so a
  cancelled job stops within one frame;
- answers prompt jobs waiting in this worker's queues (`InlineJobs`), so a click
  never waits for a long video to finish: the image predictor shares the video
  predictor's weights, and the prompt job goes through the task module's own path.

A job that runs for hours keeps its Celery message from being redelivered while it
is alive (`DeliveryLease`); if the worker dies, the message is redelivered and the
job runs again from its first frame, writing only the frames not yet written.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import redis
import torch
from pycocotools import mask as mask_utils

from sam2fleet.shared.errors import InputTooLarge, InvalidVideo
from sam2fleet.shared.records import JobRecord
from sam2fleet.shared.schemas import ObjectSummary
from sam2fleet.shared.video_files import open_frames
from sam2fleet.shared.video_memory import estimate_video_bytes
from sam2fleet.shared.video_records import FRAME_SCRIPT, StoredVideo, VideoKeys
from sam2fleet.shared.video_schemas import VideoJobSpec, frames_written, plan
from sam2fleet.worker import admission, faults, video_metrics
from sam2fleet.worker.batching import Gatherer
from sam2fleet.worker.jobs import JobCancelled, Outcome
from sam2fleet.worker.masks import rle_encode
from sam2fleet.worker.takeover import delivery_tag
from sam2fleet.worker.video_frames import LazyFrames, RedisBlob
from sam2fleet.worker.video_tracker import (
    TrackedFrame,
    VideoTracker,
    build_video_predictor,
    held_bytes,
    share_weights,
)

log = logging.getLogger(__name__)


def run(rt: Any, job_id: str, record: JobRecord) -> Outcome:
    """Track the video and write the job's terminal state through the job runner, so a
    video job fails, times out and is cancelled exactly like an image job."""
    return rt.runner.settle_with(job_id, partial(_track, rt, job_id, record))  # type: ignore[no-any-return]


def video_precision(requested: str, device: torch.device) -> str:
    """Meta's video predictor only runs as shipped under bf16 autocast: that is the
    default wherever autocast supports bf16 (CUDA with bf16, and any CPU); fp32 only
    when asked for (faster on CPUs with slow bf16, masks close to, not equal to,
    Meta's) or when the device has no bf16."""
    if requested == "fp32":
        return "fp32"
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "fp32"
    return "bf16"


_tracker: VideoTracker | None = None


def tracker_for(rt: Any) -> VideoTracker:
    """The process's video tracker, built on first use, sharing the image model's
    weights (one copy on the device)."""
    global _tracker
    if _tracker is None:
        model = rt.model
        predictor = build_video_predictor(
            model.weights.spec.config,
            str(model.weights.path),
            model.device,
            rt.settings.model_image_size,
        )
        share_weights(predictor, model.model)
        _tracker = VideoTracker(predictor, video_precision(rt.settings.precision, model.device))
    return _tracker


def load_video(rt: Any, owner: str, video_id: str) -> StoredVideo:
    keys = VideoKeys(rt.store.keys.prefix)
    stored = StoredVideo.from_redis(
        rt.store.retrying(lambda: rt.store.redis.hgetall(keys.video(owner, video_id)))
    )
    if stored is None:
        raise InvalidVideo("the job's video expired before a worker took the job")
    return stored


def refresh_ttl(rt: Any, owner: str, stored: StoredVideo) -> None:
    """Keep the video (info and chunks) for another `video_ttl_s` from now."""
    keys, ttl = VideoKeys(rt.store.keys.prefix), rt.settings.video_ttl_s
    video_id = stored.info.video_id
    pipe = rt.store.redis.pipeline(transaction=False)
    for key in [keys.video(owner, video_id), *keys.chunks(owner, video_id, stored.chunks)]:
        pipe.expire(key, ttl)
    rt.store.retrying(pipe.execute)


def _track(rt: Any, job_id: str, record: JobRecord) -> dict[str, Any]:
    spec = VideoJobSpec.model_validate_json(record.spec_json)
    owner = record.owner
    stored = load_video(rt, owner, record.image_id)
    info = stored.info
    refresh_ttl(rt, owner, stored)
    tracker = tracker_for(rt)
    _admit(rt, spec, info.width, info.height, tracker.precision)
    keys = VideoKeys(rt.store.keys.prefix)
    to_write = set(frames_written(spec, info.frames))
    writer = FrameWriter(rt, job_id, keys, spec.obj_ids())
    inline = InlineJobs(rt, rt.settings.video_inline_jobs)
    lease = DeliveryLease(rt, refresh=partial(refresh_ttl, rt, owner, stored))
    frames = open_video(rt, owner, stored, tracker.predictor.image_size)
    delay = faults.frame_delay(rt.store, info.video_id) if rt.settings.fault_injection else 0.0
    started = time.perf_counter()
    tracked_frames = 0
    lease.start()
    try:
        passes = plan(spec, info.frames)
        mark = time.perf_counter()
        for tracked in tracker.track(frames, (info.height, info.width), spec.prompts, passes):
            tracked_frames += 1
            if tracked.frame in to_write:
                to_write.discard(tracked.frame)
                writer.write(tracked)
            elif rt.store.status(job_id) != "running":
                raise JobCancelled
            seconds = time.perf_counter() - mark
            video_metrics.frame_tracked(rt, seconds, held_bytes(tracker.state))
            inline.answer()
            if delay:
                time.sleep(delay)  # test seam (worker/faults.py)
            mark = time.perf_counter()
    finally:
        lease.stop()
        frames.close()
        video_metrics.video_ended(rt)
    total = time.perf_counter() - started
    tracking_s = total - frames.decode_s - writer.encode_s - writer.write_s - inline.seconds
    return {
        "video": info.model_dump(),
        "model": rt.model.stamp.model_copy(update={"precision": tracker.precision}).model_dump(),
        "frames": writer.count,
        "objects": [s.model_dump() for s in writer.summary.values()],
        "timings": {
            "queue_s": round(max(0.0, started_at(record) - record.created_at), 6),
            "decode_s": round(frames.decode_s, 6),
            "predict_s": round(tracking_s, 6),
            "encode_s": round(writer.encode_s, 6),
            "write_s": round(writer.write_s, 6),
            "inline_s": round(inline.seconds, 6),
            "frames_per_s": round(tracked_frames / total, 3) if total > 0 else 0.0,
        },
        "notes": [f"answered {inline.answered} prompt job(s) between frames"]
        if inline.answered
        else [],
    }


def open_video(rt: Any, owner: str, stored: StoredVideo, image_size: int) -> LazyFrames:
    """The stored video's frames, decoded as SAM 2 asks, its bytes read from Redis."""
    keys, info = VideoKeys(rt.store.keys.prefix), stored.info

    def fetch(key: str) -> bytes | None:
        data: bytes | None = rt.store.retrying(lambda: rt.store.redis.get(key))
        return data

    chunks = keys.chunks(owner, info.video_id, stored.chunks)
    blob = RedisBlob(fetch, chunks, stored.chunk_bytes, info.bytes)
    # Buffered: PyAV reads in small pieces; one chunk fetch serves many of them.
    reader = open_frames(
        io.BufferedReader(blob, buffer_size=256 * 1024), max_pixels=rt.settings.max_video_pixels
    )
    if reader.frames != info.frames:
        reader.close()
        raise InvalidVideo(f"the video decodes to {reader.frames} frames, not {info.frames}")
    return LazyFrames(reader, image_size)


def started_at(record: JobRecord) -> float:
    return record.started_at if record.started_at is not None else time.time()


def _admit(rt: Any, spec: VideoJobSpec, width: int, height: int, precision: str) -> None:
    budget = admission.device_budget_bytes(
        rt.model.device, rt.settings.gpu_memory_fraction, rt.settings.gpu_memory_budget_bytes
    )
    if budget <= 0:
        return
    need = estimate_video_bytes(
        rt.model.stamp.name, rt.model.image_size, width, height, spec, precision
    )
    if need > budget:
        raise InputTooLarge(
            f"the video job is predicted to need {need / 2**30:.2f} GiB of device memory; "
            f"this worker has {budget / 2**30:.2f} GiB for a job. Track fewer objects or "
            "send a smaller video."
        )


class FrameWriter:
    """Encodes a tracked frame's masks, writes its record once, and sums up each
    object over the frames written."""

    def __init__(self, rt: Any, job_id: str, keys: VideoKeys, obj_ids: list[int]) -> None:
        self.rt = rt
        self.keys = [rt.store.keys.job(job_id), keys.frames(job_id)]
        self.script = rt.store.redis.register_script(FRAME_SCRIPT)
        self.summary = {i: ObjectSummary(obj_id=i, frames_present=0) for i in obj_ids}
        self.count = 0
        self.encode_s = 0.0
        self.write_s = 0.0

    def write(self, tracked: TrackedFrame) -> None:
        mark = time.perf_counter()
        body = json.dumps({"frame": tracked.frame, "objects": self._objects(tracked)})
        self.encode_s += time.perf_counter() - mark
        mark = time.perf_counter()
        written = self.rt.store.retrying(
            lambda: self.script(keys=self.keys, args=[tracked.frame, body])
        )
        self.write_s += time.perf_counter() - mark
        if written == -1:
            raise JobCancelled  # the job ended meanwhile: cancelled
        self.count += 1

    def _objects(self, tracked: TrackedFrame) -> list[dict[str, Any]]:
        objects = []
        for obj_id, mask, score in zip(
            tracked.obj_ids, tracked.masks, tracked.object_scores, strict=True
        ):
            rle = rle_encode(mask)
            coco = {"size": rle["size"], "counts": rle["counts"].encode()}
            area = int(mask_utils.area(coco))
            objects.append(
                {
                    "obj_id": obj_id,
                    "segmentation": rle,
                    "area": area,
                    "bbox": [float(v) for v in mask_utils.toBbox(coco)],
                    "object_score": score,
                }
            )
            if area > 0:
                s = self.summary[obj_id]
                s.frames_present += 1
                first, last = s.first_frame, s.last_frame
                s.first_frame = tracked.frame if first is None else min(first, tracked.frame)
                s.last_frame = tracked.frame if last is None else max(last, tracked.frame)
        return objects


class InlineJobs:
    """Prompt jobs waiting in this worker's queues, answered between two video frames
    (at most `limit` at a time), the way cross-job batching takes them: moved with
    LMOVE into the worker's in-flight list, started, run, written, then dropped from
    the list; one left over when the task stops goes back to the shared queue."""

    def __init__(self, rt: Any, limit: int) -> None:
        self.rt, self.limit = rt, limit
        shared = rt.store.keys.queue(rt.model.stamp.name)
        self.gatherer = Gatherer(
            rt.store,
            queues=[q for q in (rt.queue, shared) if q],
            shared_queue=shared,
            inflight=rt.inflight,
            max_size=limit + 1,
            wait_s=0.0,
            start=rt.runner.start,  # the metrics count jobs answered between frames
        )
        self.answered = 0
        self.seconds = 0.0

    def answer(self) -> None:
        if self.limit <= 0:
            return
        started = time.perf_counter()
        try:
            taken = self.gatherer.take(self.limit)
        except redis.RedisError as exc:  # Redis restarting: the video goes on, look later
            log.warning("could not look for prompt jobs between frames: %s", exc)
            return
        try:
            while taken:
                job = taken[0]
                outcome = self.rt.runner.settle(job.job_id, job.record)
                taken.pop(0)
                self.gatherer.done(job.message)
                self.rt.runner.end(job.job_id, outcome)
                self.answered += 1
        finally:
            for job in taken:  # a time limit hit while answering: run elsewhere
                self.gatherer.give_back(job.message)
                self.rt.runner.end(job.job_id, "given back")
            self.seconds += time.perf_counter() - started


@dataclass
class DeliveryLease:
    """Keeps a long job's Celery message from being redelivered while the job runs.

    With acks late, kombu's Redis transport redelivers a message that stays
    unacknowledged for `visibility_timeout` seconds (it keeps each delivered message's
    time in the sorted set `unacked_index`). A video may track for longer than that;
    this thread moves the message's time forward every few seconds, so only a job
    whose worker is gone is redelivered. It also keeps the video's TTL ahead
    (`refresh`, once a minute): a job may run longer than an upload is kept."""

    rt: Any
    refresh: Callable[[], None]
    interval_s: float = 5.0
    refresh_s: float = 60.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        from celery import current_task

        request = getattr(current_task, "request", None)
        tag = delivery_tag(request) or None
        options = current_task.app.conf.broker_transport_options or {} if tag else {}
        index = options.get("unacked_index_key", "unacked_index")
        self._thread = threading.Thread(
            target=self._renew, args=(index, tag), daemon=True, name="sam2fleet-video-lease"
        )
        self._thread.start()

    def _renew(self, index: str, tag: str | None) -> None:
        refreshed = time.monotonic()
        while not self._stop.wait(self.interval_s):
            try:
                if tag:  # not when called in-process, outside a delivered message
                    self.rt.store.redis.zadd(index, {tag: time.time()}, xx=True)
                if time.monotonic() - refreshed >= self.refresh_s:
                    self.refresh()
                    refreshed = time.monotonic()
            except Exception as exc:  # Redis restarting: try again next time
                log.warning("could not renew the video job's delivery: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
