"""Sync and async HTTP clients of the sam2fleet API, on httpx.

Both clients retry what is safe to retry: 429 and 503 honouring `Retry-After`
(seconds or an HTTP date), 502/504 and connection errors with exponential backoff
and jitter. Every submit carries an `Idempotency-Key` (one is generated when the
caller gives none), and uploads are content-addressed, so a retried request never
makes a second job.

    errors.py    ApiError, JobFailed, WaitTimeout
    models.py    the typed results: Job, Result, Mask, ImageInfo, ModelStamp, Timings;
                 a video job's VideoResult, VideoInfo, ObjectSummary, Progress
    payloads.py  image bytes and the submit body
    retry.py     RetryPolicy: what is retried, after how long
    calls.py     every call once, as steps that yield the I/O they need
    clients.py   Client and AsyncClient: those steps run blocking or awaited
"""

from sam2fleet.client.calls import API_KEY_ENV, DEFAULT_SERVER, SERVER_ENV
from sam2fleet.client.clients import AsyncClient, Client
from sam2fleet.client.errors import ApiError, JobFailed, WaitTimeout
from sam2fleet.client.models import (
    TERMINAL,
    ErrorBody,
    ImageInfo,
    Job,
    Mask,
    ModelStamp,
    ObjectSummary,
    Progress,
    Result,
    Timings,
    VideoInfo,
    VideoResult,
    decode_segmentation,
)
from sam2fleet.client.payloads import ImageLike, JobOptions, image_bytes, submit_body
from sam2fleet.client.retry import RETRY_STATUSES, Retry, RetryPolicy

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_SERVER",
    "RETRY_STATUSES",
    "SERVER_ENV",
    "TERMINAL",
    "ApiError",
    "AsyncClient",
    "Client",
    "ErrorBody",
    "ImageInfo",
    "ImageLike",
    "Job",
    "JobFailed",
    "JobOptions",
    "Mask",
    "ModelStamp",
    "ObjectSummary",
    "Progress",
    "Result",
    "Retry",
    "RetryPolicy",
    "Timings",
    "VideoInfo",
    "VideoResult",
    "WaitTimeout",
    "decode_segmentation",
    "image_bytes",
    "submit_body",
]
