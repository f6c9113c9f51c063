"""Python client of a sam2fleet server, and the batch tools built on it.

    from sam2fleet import Client
    with Client("http://127.0.0.1:8000") as c:
        job = c.segment("street.jpg", prompts=[{"box": [100, 200, 400, 650]}])
        masks = job.result.decode_masks()      # list of HxW bool numpy arrays

This package needs only httpx, numpy, Pillow, pycocotools and tqdm: it never
imports torch, celery or fastapi.
"""

from __future__ import annotations

from sam2fleet.client import (
    ApiError,
    AsyncClient,
    Client,
    ImageInfo,
    Job,
    JobFailed,
    Mask,
    Result,
    WaitTimeout,
)

__all__ = [
    "ApiError",
    "AsyncClient",
    "Client",
    "ImageInfo",
    "Job",
    "JobFailed",
    "Mask",
    "Result",
    "WaitTimeout",
]
