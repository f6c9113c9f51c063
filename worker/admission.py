"""Admission by predicted memory: take a job only if its peak device memory fits.

`estimate_bytes` predicts a job's peak device memory beyond the model's weights,
`admit` lowers the automatic generator's points_per_batch until the prediction fits
the worker's budget or refuses the job with `InputTooLarge` (before any GPU work,
instead of after a CUDA out-of-memory error), and `device_budget_bytes` turns
settings into that budget.

The prediction is the sum of the stages' peaks, each measured alone. The stages run
one after another, so on CPU the real peak is close to the largest of them; the sum
keeps room for what the CUDA caching allocator cannot reuse between stages of
different block sizes. Then x`HEADROOM`.

Units: T = (image_size / 4)^2, the stride-4 token count of the encoder's first stage
(4096 at 256 px, 65536 at 1024 px); HW = the ORIGINAL image's height x width.

1. Image encoder, per image of a batch: `ENCODER_BYTES_PER_TOKEN_CHANNEL` x C x T,
   C = the Hiera trunk's embed_dim. The peak sits in a first-stage block (MLP hidden
   of 4C, its GELU, residuals), so it follows C and T and not the depth. x
   `LOW_PRECISION_ENCODER` under bf16/fp16 autocast. Plus the embedding it leaves
   behind for the decoder (`FEATURE_BYTES_PER_TOKEN` x T, held during decoding).
2. Prompt mode, per object (objects are decoded one after another and their masks go
   to the host): the decoder (`PROMPT_DECODER_BYTES_PER_TOKEN` x T) plus 1 or 3 masks
   at HW: float32 logits upsampled from low-res, the interpolation's float32
   temporary, and a bool copy (`PROMPT_BYTES_PER_MASK_PIXEL`).
3. Automatic mode, per decoder call of B points (worker/fast_amg.py: B =
   min(points_per_batch, max_points_per_call); Meta's generator: B = points_per_batch):
   the two-way transformer and output upscaling of B points
   (`AUTO_DECODER_BYTES_PER_TOKEN` x T x B, counting every point as a survivor of the
   IoU filter), plus full-resolution logits of the largest crop (the layer-0 crop is
   the whole image): fast generator `upsample_chunk` (16) masks at a time, Meta's all
   3B candidates at once (`AUTO_BYTES_PER_MASK_PIXEL` each: logits, interpolation
   temporary, stability and threshold bools, the transposed copy for RLE). Crop
   layers run one crop at a time and every crop is smaller than the image, so they
   add only the per-candidate records kept until the cross-crop NMS
   (`RECORD_BYTES_PER_CANDIDATE`): measured peaks did not move with crop_n_layers=1.

Measured on CPU (torch 2.14, 1 thread, tiny model, seeded random weights, all
thresholds at 0 so every candidate survives), as the peak of bytes allocated inside
the measured call (`measure_peak_bytes`):

    encoder, fp32, 1 image   tiny  256: 18.75 MiB  512: 75.0  1024: 300.0  (4800 B/token)
                             small 256: 18.75   base_plus 256: 21.5   large 256: 27.75, 512: 111.0
                             2 images at 256: 37.5 (linear in the batch)
    encoder, bf16 autocast   tiny 256: 12.72, 1024: 203.5; base_plus 256: 13.88; large 256: 17.62
                             (0.64-0.68 of fp32)
    prompt decode, 3 masks   64x64 image: 2.52 MiB at 256 px, 40.0 at 1024 (decoder alone)
                             480x640: 7.14; 1000x1500: 34.4; 2000x3000: 137.4 (8 B per
                             mask pixel); same under bf16 (the logits are cast to float32
                             before upsampling)
    auto, fast generator     64x64 image at 256 px, ppb 16/32/64: 30.6/59.3/116.8 MiB;
                             at 512 px ppb 16: 120.2; at 1024 px ppb 16: 478.7
                             (460-473 B per token per point); 1000x1500, ppb 1/4/8/16:
                             40.6/157/209/233 (8.5-8.9 B per full-res mask pixel)
    auto, Meta's generator   480x640 at 256 px, ppb 16/32/64: 118/233/461 MiB;
                             1000x1500, ppb 32: 1106 (8.2 B per candidate mask pixel)

Against these whole-stage peaks the estimate comes out 1.5-2.7x high on CPU (the sum
of stages, then `HEADROOM`); tests/worker/test_admission.py checks it stays within 4x.

Derived, not measured: the encoder of small/base_plus/large at 1024 px (from T and
C: embed_dim 96/96/112/144 in sam2/configs/sam2.1/*.yaml; the measured 256/512 px
points fit within 2 %), and everything on CUDA. GPU calibration is pending: CUDA adds
library workspaces (cuBLAS, cuDNN), allocator rounding and fragmentation, and runs
attention through other SDPA kernels (where neither the flash nor the memory-efficient
kernel applies, the math kernel materialises the T/16 x T/16 attention matrix);
`HEADROOM` is a guess standing in for all of that until `measure_peak_bytes` has
been run on a GPU. Not counted: the input image's conversion to float (~27 B per
original pixel), which happens on the host before the resized image moves to the
device, and the worker's embedding cache, which the budget must leave room for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from sam2fleet.shared.errors import InputTooLarge
from sam2fleet.shared.schemas import JobSpec
from sam2fleet.worker.fast_amg import DEFAULT_MAX_POINTS_PER_CALL, DEFAULT_UPSAMPLE_CHUNK

GIB = 1 << 30

# Hiera trunk embed_dim per model (sam2/configs/sam2.1/sam2.1_hiera_{t,s,b+,l}.yaml).
ENCODER_CHANNELS = {
    "sam2.1_hiera_tiny": 96,
    "sam2.1_hiera_small": 96,
    "sam2.1_hiera_base_plus": 112,
    "sam2.1_hiera_large": 144,
}
ENCODER_BYTES_PER_TOKEN_CHANNEL = 50  # tiny: 4800 B/token = 50 x 96, exact at 256-1024 px
LOW_PRECISION_ENCODER = 0.7  # measured 0.64-0.68
FEATURE_BYTES_PER_TOKEN = 256  # fp32: 32 ch at stride 4 + 64 at stride 8 + 256 at stride 16
PROMPT_DECODER_BYTES_PER_TOKEN = 660  # measured 640-645
PROMPT_BYTES_PER_MASK_PIXEL = 9  # measured 8 (float32 logits + temporary) + a bool copy
AUTO_DECODER_BYTES_PER_TOKEN = 480  # per point of a decoder call; measured 459-473
AUTO_BYTES_PER_MASK_PIXEL = 10  # measured 8.2 (Meta) to 8.9 (fast)
RECORD_BYTES_PER_CANDIDATE = 80  # iou, stability, point, box and crop box of one mask
HEADROOM = 1.25  # uncalibrated on CUDA; see the module docstring


def _channels(model_name: str) -> int:
    for name, channels in ENCODER_CHANNELS.items():
        if model_name in (name, name.removeprefix("sam2.1_hiera_")):
            return channels
    raise ValueError(f"unknown model {model_name!r}; known: {', '.join(ENCODER_CHANNELS)}")


def _candidates(points_per_side: int, crop_layers: int, downscale: int) -> int:
    """Candidate masks over all crops: (2^i)^2 crops at layer i, 3 masks per point."""
    return sum(
        4**layer * (points_per_side // downscale**layer) ** 2 * 3
        for layer in range(crop_layers + 1)
    )


def estimate_bytes(
    model_name: str,
    image_hw: tuple[int, int],
    spec: JobSpec,
    *,
    image_size: int = 1024,
    batch: int = 1,
    precision: str = "fp32",
    fast_auto: bool = True,
) -> int:
    """Predicted peak device memory of one job beyond the model's weights, in bytes.

    `batch`: images encoded in one forward pass (cross-job batching); their
    embeddings are all held while each job decodes. `fast_auto`: the worker's
    generator in automatic mode (worker/fast_amg.py, else Meta's).
    """
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be fp32, bf16 or fp16; got {precision!r}")
    height, width = image_hw
    pixels = height * width
    tokens = (image_size // 4) ** 2
    encoder = ENCODER_BYTES_PER_TOKEN_CHANNEL * _channels(model_name) * tokens * batch
    if precision != "fp32":
        encoder = int(encoder * LOW_PRECISION_ENCODER)
    features = FEATURE_BYTES_PER_TOKEN * tokens * batch
    if spec.mode == "prompt":
        masks = 3 if spec.multimask else 1
        decode = (
            PROMPT_DECODER_BYTES_PER_TOKEN * tokens + masks * pixels * PROMPT_BYTES_PER_MASK_PIXEL
        )
    else:
        auto = spec.auto
        if fast_auto:
            points = min(auto.points_per_batch, DEFAULT_MAX_POINTS_PER_CALL)
            full_res = min(DEFAULT_UPSAMPLE_CHUNK, 3 * points)
        else:
            points = auto.points_per_batch
            full_res = 3 * points
        records = RECORD_BYTES_PER_CANDIDATE * _candidates(
            auto.points_per_side, auto.crop_n_layers, auto.crop_n_points_downscale_factor
        )
        decode = (
            AUTO_DECODER_BYTES_PER_TOKEN * tokens * points
            + full_res * pixels * AUTO_BYTES_PER_MASK_PIXEL
            + records
        )
    return int((encoder + features + decode) * HEADROOM)


def _gib(nbytes: float) -> str:
    value = nbytes / GIB
    return f"{value:.1f} GiB" if value >= 1 else f"{value:.2f} GiB"


def admit(
    spec: JobSpec,
    image_hw: tuple[int, int],
    budget_bytes: int,
    *,
    model_name: str,
    image_size: int = 1024,
    min_points_per_batch: int = 8,
    precision: str = "fp32",
    batch: int = 1,
    fast_auto: bool = True,
) -> tuple[JobSpec, list[str]]:
    """The spec to run (maybe with less work in flight) and notes for the result.

    Raises `InputTooLarge` when even the least work does not fit. A budget <= 0
    means no limit.
    """
    if budget_bytes <= 0:
        return spec, []

    def estimate(s: JobSpec, hw: tuple[int, int] = image_hw) -> int:
        return estimate_bytes(
            model_name,
            hw,
            s,
            image_size=image_size,
            batch=batch,
            precision=precision,
            fast_auto=fast_auto,
        )

    predicted = estimate(spec)
    if predicted <= budget_bytes:
        return spec, []
    height, width = image_hw
    if spec.mode == "auto":
        original = spec.auto.points_per_batch
        ppb = original
        least = spec
        while ppb // 2 >= min_points_per_batch:
            ppb //= 2
            least = spec.model_copy(
                update={"auto": spec.auto.model_copy(update={"points_per_batch": ppb})}
            )
            lowered = estimate(least)
            if lowered <= budget_bytes:
                return least, [
                    f"points_per_batch lowered from {original} to {ppb} to fit the worker's "
                    f"memory budget (predicted {_gib(predicted)} at {original}, "
                    f"{_gib(lowered)} at {ppb}; budget {_gib(budget_bytes)})"
                ]
        raise InputTooLarge(
            f"an automatic-mode job on a {width}x{height} image needs about "
            f"{_gib(estimate(least))} of device memory even with points_per_batch="
            f"{least.auto.points_per_batch}, and this worker allows {_gib(budget_bytes)}; "
            f"{_what_fits(estimate, least, image_hw, budget_bytes)}"
        )
    hint = _what_fits(estimate, spec, image_hw, budget_bytes)
    if spec.multimask:
        single = spec.model_copy(update={"multimask": False})
        if estimate(single) <= budget_bytes:
            hint = "send multimask=false (one mask per object instead of three), or " + hint
    raise InputTooLarge(
        f"a prompt-mode job on a {width}x{height} image needs about {_gib(predicted)} of "
        f"device memory and this worker allows {_gib(budget_bytes)}; {hint}"
    )


def _what_fits(
    estimate: Callable[[JobSpec, tuple[int, int]], int],
    spec: JobSpec,
    image_hw: tuple[int, int],
    budget_bytes: int,
) -> str:
    """Advice: the largest image of the same aspect ratio that would fit (the
    estimate is linear in the image's pixel count)."""
    height, width = image_hw
    fixed = estimate(spec, (0, 0))
    per_pixel = (estimate(spec, (1024, 1024)) - fixed) / (1024 * 1024)
    scale = (
        ((budget_bytes - fixed) / per_pixel / (height * width)) ** 0.5
        if fixed < budget_bytes
        else 0
    )
    fit_w, fit_h = int(width * scale), int(height * scale)
    if min(fit_w, fit_h) < 1:
        return "it does not fit at any image size here; send it to a worker with more memory"
    return f"send a smaller image (at most about {fit_w}x{fit_h})"


def device_budget_bytes(device: torch.device, fraction: float, configured: int) -> int:
    """Bytes a job may use on `device`: 0 means no limit.

    `configured` > 0 wins. On CUDA otherwise: `fraction` of the card's memory less
    what this process has allocated already (the weights, and the embedding cache so
    far), at least 1 byte, so a card with nothing left refuses every job instead of
    admitting all of them. CPU (and other devices) have no limit.
    """
    if configured < 0:
        raise ValueError("a configured budget must be >= 0 (0: derive it)")
    if configured > 0:
        return configured
    if device.type != "cuda":
        return 0
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"memory fraction must be in (0, 1]; got {fraction}")
    total = torch.cuda.get_device_properties(device).total_memory
    return max(1, int(fraction * total) - torch.cuda.memory_allocated(device))


def measure_peak_bytes(fn: Callable[[], Any], device: torch.device) -> int:
    """Peak bytes allocated by `fn` beyond what was allocated before it: how the
    coefficients above were measured (CPU) and are to be measured (CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch.profiler import ProfilerActivity, profile

    # CPU has no peak counter; the profiler records each allocation and free. Frees
    # of blocks allocated before profiling started are not reported, so the running
    # sum only counts memory that `fn` itself allocated.
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]"
    )
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak
