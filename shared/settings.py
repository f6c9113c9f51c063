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

from sam2fleet.shared import redis_clients


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAM2FLEET_", extra="ignore")

    environment: Literal["development", "production"] = Field(
        "development",
        description="`production` refuses unsafe settings (random weights).",
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Redis used as the Celery broker and for job records, images and results: "
        "`redis://`, `rediss://`, `unix://`, or Redis Sentinel as "
        "`sentinel://host:26379,host:26379/0?master=NAME` (docs/reliability.md). "
        "Redis Cluster is refused.",
    )
    redis_min_replicas_ack: int | None = Field(
        None,
        ge=0,
        le=16,
        description="Replicas that must hold a job (Redis `WAIT`) before the API answers "
        "202; unset: 1 with a `sentinel://` URL, 0 otherwise. A submit whose job is not "
        "replicated in time is withdrawn and answered 503 `unavailable`. Workers wait for "
        "as many replicas after writing a job's outcome, and write it again if a failover "
        "lost it.",
    )
    redis_replica_ack_timeout_ms: int = Field(
        1000,
        ge=1,
        le=60_000,
        description="How long a submit waits for redis_min_replicas_ack replicas before "
        "it is withdrawn and answered 503.",
    )
    key_prefix: str = Field(
        "sam2fleet",
        description="Prefix of every Redis key and queue name, so fleets can share one Redis.",
    )
    redis_maxmemory_bytes: int = Field(
        2 * 1024**3,
        ge=0,
        description="`maxmemory` of the Redis that `sam2fleet up` starts itself (with "
        "`noeviction`: a full Redis refuses writes instead of dropping jobs); 0: no cap. "
        "A Redis found at redis_url keeps its own configuration.",
    )

    # --- model ---------------------------------------------------------------
    model: str = Field(
        "sam2.1_hiera_tiny",
        description="Model variant a worker serves, and the API's default for jobs that name none.",
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
        'is present. Every result then says "weights": "random".',
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
    embedding_cache_bytes: int = Field(
        1 << 30,
        ge=0,
        description="Bytes of recent image embeddings a worker keeps (LRU) so more prompts "
        "on the same image skip the encoder; 0 turns the cache off.",
    )
    affinity_ttl_s: int = Field(
        600,
        ge=0,
        description="How long the gateway routes prompt jobs on an image to the worker that "
        "embedded it last; 0 turns image affinity off.",
    )
    affinity_max_backlog: int = Field(
        2,
        ge=1,
        description="Jobs already waiting for that worker beyond which the job goes to the "
        "shared queue instead (a busy worker's cache is not worth the wait).",
    )
    torch_threads: int | None = Field(
        None, ge=1, description="Torch CPU threads of a worker; unset: torch's default."
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="Compute precision of SAM 2 on a worker: `auto` = bf16 autocast on a "
        "CUDA device that supports it, else fp32; `fp32`; `bf16`; `fp16` (CUDA only).",
    )
    compile_encoder: Literal["off", "default", "reduce-overhead", "max-autotune"] = Field(
        "off",
        description="torch.compile the image encoder with this mode; the worker compiles "
        "during its warm-up (minutes on a GPU) before it reports ready.",
    )
    gpu_memory_budget_bytes: int = Field(
        0,
        ge=0,
        description="Device memory one job may use beyond the model's weights; jobs "
        "predicted to need more are split (automatic mode: fewer points per batch) or "
        "refused with `input_too_large`. 0: gpu_memory_fraction of the card on CUDA, "
        "no limit on CPU.",
    )
    gpu_memory_fraction: float = Field(
        0.85,
        gt=0,
        le=1,
        description="With gpu_memory_budget_bytes 0 on CUDA: the share of the card's "
        "memory a worker plans to use, minus what it already holds (weights, cached "
        "embeddings); below 1 for the CUDA context and fragmentation.",
    )
    batch_max_size: int = Field(
        0,
        ge=0,
        le=64,
        description="Cross-job batching: most prompt-mode jobs a worker takes at once; "
        "their images go through the encoder in one batched forward pass. 1 turns "
        "batching off; 0 = 8 on a CUDA device, 1 on CPU (where a batched encoder pass "
        "measured slower per image than one image at a time).",
    )
    batch_wait_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="How long a worker holding one prompt job waits for more to arrive "
        "before encoding; 0 batches only the jobs already queued (no added latency).",
    )
    fast_auto: bool = Field(
        True,
        description="Automatic mode uses worker/fast_amg.py (same masks as Meta's "
        "generator, shared decoder work, full resolution only for survivors); "
        "`false`: Meta's SAM2AutomaticMaskGenerator.",
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

    # --- video ---------------------------------------------------------------
    max_video_bytes: int = Field(
        512 * 1024 * 1024,
        ge=1,
        description="Largest accepted video upload, a container file or a zip of frames "
        "(413 beyond it); it is kept in Redis in 1 MiB chunks.",
    )
    max_video_frames: int = Field(
        216_000, ge=1, description="Most frames in one video (2 h at 30 fps); 413 beyond it."
    )
    max_video_pixels: int = Field(
        3840 * 2160,
        ge=1,
        description="Largest width × height of a video's frames (4K UHD); 413 beyond it.",
    )
    video_ttl_s: int = Field(
        3600,
        ge=1,
        description="Seconds an uploaded video is kept; a job using it keeps it while it runs.",
    )
    video_time_limit_s: int = Field(
        86400,
        ge=1,
        description="Soft time limit of one video job (it fails with `timeout`); the hard "
        "limit is 60 s more. Not bound by visibility_timeout_s: a running video job keeps "
        "its message from redelivery.",
    )
    video_inline_jobs: int = Field(
        4,
        ge=0,
        le=64,
        description="Prompt jobs a worker tracking a video answers between two frames, so "
        "a click is not held up by a long video; 0: none (they wait for another worker).",
    )
    max_video_job_bytes: int = Field(
        8 * 1024**3,
        ge=0,
        description="Largest predicted device memory of one video job the gateway accepts "
        "(413 beyond it; shared/video_memory.py); 0: no limit. Workers also check it "
        "against their own budget.",
    )

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
        "(for /readyz and /v1/models), and live workers' sweeps run its jobs again "
        "(worker/takeover.py): a lost worker's job restarts within this plus "
        "heartbeat_interval_s.",
    )
    worker_warmup_timeout_s: float = Field(
        300.0,
        gt=0,
        description="`sam2fleet up` replaces a worker that has not reported a finished "
        "warm-up this long after it started (or after its model process was replaced), "
        "printing the worker's last log lines. It covers writing a missing random "
        "checkpoint; a real one is downloaded before the workers start.",
    )
    shutdown_grace_s: float = Field(
        6.0,
        ge=0,
        description="On Ctrl-C or SIGTERM `sam2fleet up` gives its processes this long to "
        "stop, then SIGKILLs what is left (a job cut short is redelivered: acks late).",
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
        "acknowledging it, when no live worker's sweep did so first (a heartbeat TTL "
        "after the loss). Must exceed task_time_limit_s.",
    )
    max_attempts: int = Field(
        3,
        ge=1,
        le=20,
        description="Deliveries of one job before it is failed with `worker_crashed` "
        "(a job that kills its worker every time must not loop forever).",
    )
    oom_min_points_per_batch: int = Field(
        4,
        ge=1,
        description="Automatic mode halves points_per_batch after CUDA out-of-memory down to "
        "this, then fails the job with `input_too_large`.",
    )
    redis_retry_s: float = Field(
        30.0,
        ge=0,
        description="How long a worker keeps retrying a Redis write (a result, a status) "
        "while Redis restarts, before giving the job up to redelivery.",
    )
    fault_injection: bool = Field(
        False,
        description="Test seam: workers read `{prefix}:fault:{image_id}` keys and inject "
        "crashes, delays, out-of-memory or CUDA errors. Refused in production.",
    )

    # --- observability -----------------------------------------------------------
    worker_metrics_port: int = Field(
        9101,
        ge=0,
        le=65535,
        description="Port on which a worker's pool process serves Prometheus /metrics; "
        "0 turns it off. Each worker on one host needs its own (`sam2fleet up` gives "
        "worker i this port + i).",
    )
    worker_metrics_host: str = Field(
        "127.0.0.1",
        description="Address a worker's metrics server listens on; `0.0.0.0` in containers "
        "so Prometheus can reach it.",
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="Log lines of the API and worker processes: `text`, or `json` (one "
        "JSON object per line, with `job_id` on every line about a job).",
    )

    # --- api -------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address the API listens on.")
    port: int = Field(8000, description="Port the API listens on.")
    auth_enabled: bool = Field(
        False,
        description="Require an API key on /v1 routes. Off for the local one-command run; "
        "required in production.",
    )
    api_key_hashes: str = Field(
        "",
        description="Comma-separated sha256 hex digests of accepted API keys (keys are "
        "never stored in clear); `sam2fleet keys create` adds more in Redis.",
    )
    max_queued_jobs: int = Field(
        1000,
        ge=1,
        description="Jobs waiting for one model's workers (its shared and private queues, "
        "and submits being admitted) beyond which submits get 503 with Retry-After; checked "
        "and reserved in one atomic step, so it holds across API processes.",
    )
    rate_limit_per_minute: int = Field(
        0,
        ge=0,
        description="Submits (jobs and uploads) per API key in any 60 seconds (a sliding "
        "window in Redis, shared by all API processes); 429 with Retry-After beyond it. "
        "0: no limit.",
    )
    redis_memory_high_water: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Share of Redis's `maxmemory` above which new jobs and uploads get 503 "
        "`storage_full` with Retry-After, keeping the rest for the results of jobs already "
        "accepted. No effect on a Redis without maxmemory.",
    )
    idempotency_ttl_s: int = Field(
        86400, ge=1, description="How long an Idempotency-Key is remembered."
    )

    @model_validator(mode="after")
    def _check(self) -> Settings:
        redis_clients.parse(self.redis_url)  # a bad or cluster URL stops the process here
        if self.model_image_size is not None and self.model_image_size % 32:
            raise ValueError("model_image_size must be a multiple of 32")
        if self.visibility_timeout_s <= self.task_time_limit_s:
            raise ValueError(
                "visibility_timeout_s must exceed task_time_limit_s, or Redis would "
                "redeliver jobs that are still running"
            )
        if self.task_soft_time_limit_s >= self.task_time_limit_s:
            raise ValueError("task_soft_time_limit_s must be below task_time_limit_s")
        if self.environment == "production":
            if self.random_weights:
                raise ValueError("random_weights is refused when environment=production")
            if self.fault_injection:
                raise ValueError("fault_injection is refused when environment=production")
            if not self.auth_enabled:
                raise ValueError("auth_enabled must be on when environment=production")
        return self

    def replicas_to_ack(self) -> int:
        """Replicas a job must reach before its 202 (`redis_min_replicas_ack` resolved)."""
        if self.redis_min_replicas_ack is not None:
            return self.redis_min_replicas_ack
        return 1 if redis_clients.parse(self.redis_url).is_sentinel else 0

    def accepted_key_hashes(self) -> set[str]:
        return {h.strip().lower() for h in self.api_key_hashes.split(",") if h.strip()}

    def batch_size_for(self, device_type: str) -> int:
        """Cross-job batch size on a worker whose model sits on this device type."""
        if self.batch_max_size:
            return self.batch_max_size
        return 8 if device_type == "cuda" else 1


@lru_cache
def get_settings() -> Settings:
    return Settings()
