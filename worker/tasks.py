"""The segmentation task: start the job, hand it to the runner, end the task.

The job runner (worker/jobs.py) runs one job to its terminal write; with cross-job
batching on, a prompt job goes to the batch runner (worker/batching.py), which takes
more waiting prompt jobs along; a video job goes to worker/video_jobs.py. What each
failure leads to: worker/failures.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from celery import shared_task

from sam2fleet.shared.queue import SEGMENT_TASK
from sam2fleet.worker.takeover import delivery_tag

if TYPE_CHECKING:
    from sam2fleet.worker.jobs import Outcome


@shared_task(name=SEGMENT_TASK, ignore_result=True)
def segment(job_id: str) -> str:
    # The Celery supervisor registers this task but must not import torch before it
    # forks its pool (worker/celery_app.py): the model's modules load in the pool.
    from sam2fleet.worker import runtime, video_jobs

    rt = runtime.current()
    record = rt.runner.start(job_id, delivery_tag(segment.request))
    if record is None:
        return "skipped"
    outcome: Outcome = "failed"  # if an exception escapes the runner
    try:
        if record.mode == "video":  # worker/video_jobs.py; clicks are answered between frames
            outcome = video_jobs.run(rt, job_id, record)
        elif record.mode == "prompt" and rt.batcher is not None:
            outcome = rt.batcher.run(job_id, record)
        else:
            outcome = rt.runner.settle(job_id, record)
    finally:
        rt.runner.end(job_id, outcome)
        rt.clearer.after_batch()
    return "failed" if outcome == "timeout" else outcome
