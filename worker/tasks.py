"""The segmentation task: fetch the job, run the pipeline, write the result once."""

from __future__ import annotations

import logging
import time

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from shared.errors import InvalidImage, Sam2FleetError
from shared.queue import SEGMENT_TASK
from shared.schemas import JobSpec
from worker import runtime
from worker.pipeline import run_job

log = logging.getLogger(__name__)


@shared_task(name=SEGMENT_TASK, ignore_result=True)
def segment(job_id: str) -> str:
    rt = runtime.current()
    record = rt.store.start(job_id)
    if record is None:
        log.info("job %s skipped: gone, cancelled or already finished", job_id)
        return "skipped"
    try:
        image_bytes = rt.store.image_bytes(record["image_id"])
        if image_bytes is None:
            raise InvalidImage("the job's image expired before a worker took the job")
        result = run_job(
            rt.model,
            JobSpec.model_validate_json(record["spec"]),
            image_bytes,
            max_pixels=rt.settings.max_image_pixels,
            queue_s=round(time.time() - float(record["created_at"]), 6),
        )
        rt.store.succeed(job_id, result)
        return "succeeded"
    except Sam2FleetError as exc:
        rt.store.fail(job_id, exc.to_dict())
        return "failed"
    except SoftTimeLimitExceeded:
        rt.store.fail(job_id, {"type": "timeout", "message": "the job ran past its time limit"})
        return "failed"
    except Exception as exc:
        log.exception("job %s failed", job_id)
        rt.store.fail(job_id, {"type": "internal", "message": f"{type(exc).__name__}: {exc}"})
        return "failed"
    finally:
        rt.clearer.after_batch()
