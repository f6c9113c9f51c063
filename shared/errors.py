"""One error tree for the gateway and the workers.

    Sam2FleetError                      500 internal
    ├── BadRequest                      400 bad_request
    ├── PayloadTooLarge                 413 payload_too_large
    │   └── ImageTooLarge               413 image_too_large
    ├── UnsupportedMediaType            415 unsupported_media_type
    │   └── UnsupportedImage            415 unsupported_image
    ├── InvalidInput                    422 invalid_input
    │   ├── InvalidImage                422 invalid_image
    │   └── InvalidPrompt               422 invalid_prompt
    ├── Unauthorized                    401 unauthorized
    ├── NotFound                        404 not_found
    ├── Conflict                        409 conflict
    │   └── IdempotencyConflict         409 idempotency_conflict
    ├── RateLimited                     429 rate_limited  (Retry-After)
    ├── Unavailable                     503 unavailable  (Retry-After)
    │   ├── NoWorkerReady               503 no_worker_ready
    │   └── QueueFull                   503 queue_full
    ├── InputTooLarge                   422 input_too_large  (a worker could not fit it)
    └── ModelUnavailable                500 model_unavailable (worker could not load weights)

The API registers one handler on the base class; workers store `type` and `message`
on the failed job record, so clients see the same names either way.
"""

from __future__ import annotations


class Sam2FleetError(Exception):
    type: str = "internal"
    status: int = 500
    retry_after: int | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"type": self.type, "message": self.message}


class BadRequest(Sam2FleetError):
    type, status = "bad_request", 400


class PayloadTooLarge(Sam2FleetError):
    type, status = "payload_too_large", 413


class ImageTooLarge(PayloadTooLarge):
    type = "image_too_large"


class UnsupportedMediaType(Sam2FleetError):
    type, status = "unsupported_media_type", 415


class UnsupportedImage(UnsupportedMediaType):
    type = "unsupported_image"


class InvalidInput(Sam2FleetError):
    type, status = "invalid_input", 422


class InvalidImage(InvalidInput):
    type = "invalid_image"


class InvalidPrompt(InvalidInput):
    type = "invalid_prompt"


class Unauthorized(Sam2FleetError):
    type, status = "unauthorized", 401


class NotFound(Sam2FleetError):
    type, status = "not_found", 404


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


class InputTooLarge(Sam2FleetError):
    type, status = "input_too_large", 422


class ModelUnavailable(Sam2FleetError):
    type = "model_unavailable"
