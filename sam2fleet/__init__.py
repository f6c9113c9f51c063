"""Python client of a sam2fleet server, and the batch tools built on it.

    from sam2fleet import Client
    with Client("http://127.0.0.1:8000") as c:
        job = c.segment("street.jpg", prompts=[{"box": [100, 200, 400, 650]}])
        masks = job.result.decode_masks()      # list of HxW bool numpy arrays

The client needs only httpx, numpy, Pillow, pycocotools, pydantic and tqdm: it never
imports torch, Celery or FastAPI. The server's packages are installed beside it as
`sam2fleet.api`, `sam2fleet.worker` and `sam2fleet.shared` (the folders `api/`,
`worker/` and `shared/` of the repository) and need the `server` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    # Lazy: importing `sam2fleet.api` or `sam2fleet.worker` must not load the client.
    if name in __all__:
        from sam2fleet import client

        return getattr(client, name)
    raise AttributeError(f"module 'sam2fleet' has no attribute {name!r}")
