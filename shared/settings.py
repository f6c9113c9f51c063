"""One settings object per process, read from `SAM2FLEET_*` environment variables.

Every field carries a description; the README's settings table is checked against this
class by a test, so the documentation cannot drift from the code.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAM2FLEET_", extra="ignore")

    environment: Literal["development", "production"] = Field(
        "development",
        description="`production` refuses unsafe settings (random weights).",
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Redis used as the Celery broker and for job records, images and results.",
    )
    key_prefix: str = Field(
        "sam2fleet",
        description="Prefix of every Redis key and queue name, so fleets can share one Redis.",
    )

    # --- model ---------------------------------------------------------------
    model: str = Field(
        "sam2.1_hiera_tiny",
        description="Model variant a worker serves, and the API's default for jobs "
        "that name none.",
    )
    checkpoint_dir: Path = Field(
        Path("checkpoints"),
        description="Folder holding Meta's checkpoint files under their original names.",
    )
    checkpoint: Path | None = Field(
        None,
        description="Path to a checkpoint file in Meta's format ({'model': state_dict}); "
        "overrides checkpoint_dir, for fine-tuned weights too.",
    )
    checkpoint_base_url: str = Field(
        "https://dl.fbaipublicfiles.com/segment_anything_2/092824",
        description="Where `sam2fleet checkpoints download` fetches Meta's files; point it "
        "at a mirror on networks that cannot reach Meta's host.",
    )
    random_weights: bool = Field(
        False,
        description="Explicit opt-in: run with seeded random weights when no checkpoint "
        "is present. Every result then says \"weights\": \"random\".",
    )
    random_seed: int = Field(0, description="Seed of the random weights.")
    model_image_size: int | None = Field(
        None,
        ge=64,
        le=2048,
        description="Override of the model's input size (multiple of 32), "
        "e.g. 256 for fast CPU tests. Unset: the config's 1024.",
    )
    device: str = Field(
        "auto",
        description="Torch device of a worker: `auto` (CUDA when visible, else CPU), "
        "`cpu`, `cuda`, `cuda:N`.",
    )
    cuda_empty_cache: Literal["always", "never", "threshold"] = Field(
        "threshold",
        description="When a worker returns cached CUDA memory to the driver after a "
        "batch: every batch, never, or when reserved-but-unallocated bytes exceed "
        "cuda_empty_cache_threshold_bytes.",
    )
    cuda_empty_cache_threshold_bytes: int = Field(
        1 << 30,
        ge=0,
        description="Idle reserved bytes above which the `threshold` policy clears the cache.",
    )
    torch_threads: int | None = Field(
        None, ge=1, description="Torch CPU threads of a worker; unset: torch's default."
    )

    # --- limits --------------------------------------------------------------
    max_request_bytes: int = Field(
        40 * 1024 * 1024, description="Largest accepted request body (413 beyond it)."
    )
    max_image_bytes: int = Field(
        25 * 1024 * 1024, description="Largest accepted encoded image (413 beyond it)."
    )
    max_image_pixels: int = Field(
        50_000_000,
        description="Largest accepted width × height, checked from the header before "
        "any pixel is decoded (decompression bombs get 413).",
    )
    max_objects: int = Field(64, description="Most prompt objects in one job.")
    max_points: int = Field(64, description="Most points in one prompt object.")

    # --- lifetimes -----------------------------------------------------------
    image_ttl_s: int = Field(3600, description="Seconds an uploaded image is kept.")
    job_ttl_s: int = Field(
        86400, description="Seconds a job record and its result are kept after submission."
    )
    max_wait_s: float = Field(
        60.0, description="Longest long-poll `GET /v1/jobs/{id}?wait=` a client may ask for."
    )

    # --- worker ----------------------------------------------------------------
    heartbeat_interval_s: float = Field(
        5.0, description="How often a worker reports itself alive in Redis."
    )
    heartbeat_ttl_s: float = Field(
        20.0,
        description="A worker not heard from for this long counts as gone "
        "(for /readyz and /v1/models).",
    )
    task_soft_time_limit_s: int = Field(
        300, description="Soft time limit of one job; the job fails with `timeout`."
    )
    task_time_limit_s: int = Field(
        360, description="Hard time limit: the process running the job is killed."
    )
    visibility_timeout_s: int = Field(
        3600,
        description="Seconds before Redis redelivers a job whose worker vanished without "
        "acknowledging it. Must exceed task_time_limit_s.",
    )

    # --- api -------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address the API listens on.")
    port: int = Field(8000, description="Port the API listens on.")

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.model_image_size is not None and self.model_image_size % 32:
            raise ValueError("model_image_size must be a multiple of 32")
        if self.visibility_timeout_s <= self.task_time_limit_s:
            raise ValueError(
                "visibility_timeout_s must exceed task_time_limit_s, or Redis would "
                "redeliver jobs that are still running"
            )
        if self.task_soft_time_limit_s >= self.task_time_limit_s:
            raise ValueError("task_soft_time_limit_s must be below task_time_limit_s")
        if self.environment == "production" and self.random_weights:
            raise ValueError("random_weights is refused when environment=production")
        return self

    def queue_for(self, model: str) -> str:
        return f"{self.key_prefix}.{model}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
