"""One error tree for the gateway and the workers.

    Sam2FleetError                      500 internal
    ├── BadRequest                      400 bad_request
    ├── PayloadTooLarge                 413 payload_too_large
    │   ├── ImageTooLarge               413 image_too_large
    │   └── VideoTooLarge               413 video_too_large
    ├── UnsupportedMediaType            415 unsupported_media_type
    │   ├── UnsupportedImage            415 unsupported_image
    │   └── UnsupportedVideo            415 unsupported_video
    ├── InvalidInput                    422 invalid_input
    │   ├── InvalidImage                422 invalid_image
    │   ├── InvalidVideo                422 invalid_video
    │   └── InvalidPrompt               422 invalid_prompt
    ├── Unauthorized                    401 unauthorized
    ├── NotFound                        404 not_found
    ├── MethodNotAllowed                405 method_not_allowed
    ├── Conflict                        409 conflict
    │   └── IdempotencyConflict         409 idempotency_conflict
    ├── RateLimited                     429 rate_limited  (Retry-After)
    ├── Unavailable                     503 unavailable  (Retry-After)
    │   ├── NoWorkerReady               503 no_worker_ready
    │   ├── QueueFull                   503 queue_full
    │   └── StorageFull                 503 storage_full  (Redis near its maxmemory)
    ├── InputTooLarge                   422 input_too_large  (a worker could not fit it)
    ├── ModelUnavailable                500 model_unavailable (worker could not load weights)
    ├── JobTimeout                      504 timeout  (a job ran past its time limit)
    ├── WorkerCrashed                   500 worker_crashed  (its worker died on every attempt)
    └── JobError                        the status of its `type`: a job that failed on a
                                        worker, raised again by the gateway (POST /segment)

The API registers one handler on the base class; workers store `type` and `message`
on the failed job record (`to_body()`), so clients see the same names either way.
"""

from __future__ import annotations

from sam2fleet.shared.schemas import ErrorBody


class Sam2FleetError(Exception):
    type: str = "internal"
    status: int = 500
    retry_after: int | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"type": self.type, "message": self.message}

    def to_body(self) -> ErrorBody:
        return ErrorBody(type=self.type, message=self.message)


class BadRequest(Sam2FleetError):
    type, status = "bad_request", 400


class PayloadTooLarge(Sam2FleetError):
    type, status = "payload_too_large", 413


class ImageTooLarge(PayloadTooLarge):
    type = "image_too_large"


class VideoTooLarge(PayloadTooLarge):
    type = "video_too_large"


class UnsupportedMediaType(Sam2FleetError):
    type, status = "unsupported_media_type", 415


class UnsupportedImage(UnsupportedMediaType):
    type = "unsupported_image"


class UnsupportedVideo(UnsupportedMediaType):
    type = "unsupported_video"


class InvalidInput(Sam2FleetError):
    type, status = "invalid_input", 422


class InvalidImage(InvalidInput):
    type = "invalid_image"


class InvalidVideo(InvalidInput):
    type = "invalid_video"


class InvalidPrompt(InvalidInput):
    type = "invalid_prompt"


class Unauthorized(Sam2FleetError):
    type, status = "unauthorized", 401


class NotFound(Sam2FleetError):
    type, status = "not_found", 404


class MethodNotAllowed(Sam2FleetError):
    type, status = "method_not_allowed", 405


class Conflict(Sam2FleetError):
    type, status = "conflict", 409


class IdempotencyConflict(Conflict):
    type = "idempotency_conflict"


class RateLimited(Sam2FleetError):
    type, status = "rate_limited", 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(Sam2FleetError):
    type, status, retry_after = "unavailable", 503, 2


class NoWorkerReady(Unavailable):
    type, retry_after = "no_worker_ready", 5


class QueueFull(Unavailable):
    type, retry_after = "queue_full", 5


class StorageFull(Unavailable):
    # Room comes back as results and images expire or are read: minutes, not seconds.
    type, retry_after = "storage_full", 30


class InputTooLarge(Sam2FleetError):
    type, status = "input_too_large", 422


class ModelUnavailable(Sam2FleetError):
    type = "model_unavailable"


class JobTimeout(Sam2FleetError):
    type, status = "timeout", 504


class WorkerCrashed(Sam2FleetError):
    type = "worker_crashed"


def error_types() -> frozenset[str]:
    """Every `type` in the tree above."""

    def walk(cls: type[Sam2FleetError]) -> set[str]:
        return {cls.type}.union(*(walk(sub) for sub in cls.__subclasses__()))

    return frozenset(walk(Sam2FleetError))


def status_of(error_type: str) -> int:
    """The HTTP status of an error `type`, from the tree above; 500 when unknown."""

    def walk(cls: type[Sam2FleetError]) -> int | None:
        if cls.type == error_type:
            return cls.status
        for sub in cls.__subclasses__():
            found = walk(sub)
            if found is not None:
                return found
        return None

    return walk(Sam2FleetError) or 500


class JobError(Sam2FleetError):
    """A job that failed on a worker, raised again with its own error type."""

    def __init__(self, body: ErrorBody) -> None:
        super().__init__(body.message)
        self.type = body.type
        self.status = status_of(body.type)
