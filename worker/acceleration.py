"""GPU speed switches: mixed precision and a compiled image encoder.

Plain functions over plain arguments; the worker maps its settings onto them.

Mixed precision. Meta's SAM 2 notebooks run the image predictor under bf16 autocast
on CUDA. `SAM2ImagePredictor.predict` casts its outputs with `.float()` before
`.numpy()`, so masks, scores and low-res logits come back as float32 numpy under
autocast too, and callers need no change. Inside, the high-resolution features of an
embedding come out as bf16 (the low-res `image_embed` stays float32); a prediction
made later without autocast still works on them (they are only added to float32
tensors), so cached embeddings stay usable if the switch is flipped.

Run autocast inside `torch.inference_mode()`, as the worker does: under plain
`no_grad` autocast caches a bf16 copy of every weight it casts until the autocast
region ends (half the weights' bytes again); under inference mode it does not.

Compiling. The encoder's `forward` is compiled the way SAM 2's own
`compile_image_encoder=True` does (sam2/modeling/sam2_base.py: fullgraph, static
shapes), with the mode chosen by the caller instead of always "max-autotune". The
input is always image_size x image_size, so `dynamic=False` costs nothing for one
image at a time; each distinct batch size of a batched encode is its own graph,
compiled on first sight (and beyond torch._dynamo's recompile limit, default 8,
further sizes silently run uncompiled).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Set on a compiled encoder so a second call does not wrap the compiled forward again.
_COMPILED_MARK = "_sam2fleet_compiled_mode"


def resolve_precision(requested: str, device: torch.device) -> str:
    """The precision a worker runs at: one of "fp32", "bf16", "fp16"."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {requested!r}")
    if device.type == "cuda":
        if requested == "auto":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        if requested == "bf16" and not torch.cuda.is_bf16_supported():
            raise ValueError(
                f"precision bf16 was asked for but {device} does not support bf16; use fp16 or fp32"
            )
        return requested
    if requested == "auto":
        # fp32 on CPU: results then match Meta's fp32 reference exactly. bf16 is an
        # opt-in there: on CPUs without bf16 instructions it is slower; with
        # AVX512-BF16 the encoder measured 1.9x faster (docs/performance.md).
        return "fp32"
    if requested == "fp16" and device.type == "cpu":
        raise ValueError("precision fp16 is not supported on CPU; use bf16 or fp32")
    return requested


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """The context to run the model under; `precision` as `resolve_precision` returns."""
    if precision == "fp32":
        return contextlib.nullcontext()
    try:
        dtype = _DTYPES[precision]
    except KeyError:
        raise ValueError(f"precision must be fp32, bf16 or fp16; got {precision!r}") from None
    return torch.autocast(device.type, dtype=dtype)


def compile_image_encoder(sam_model: Any, mode: str, *, backend: str = "inductor") -> bool:
    """Compile `sam_model.image_encoder.forward`; True when it is compiled.

    "off" leaves the model alone. Compilation itself is lazy: the first encode after
    this call pays for it (tens of seconds), so call `warmup` afterwards.
    """
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be one of {', '.join(COMPILE_MODES)}; got {mode!r}")
    if mode == "off":
        return False
    encoder = sam_model.image_encoder
    if getattr(encoder, _COMPILED_MARK, None) is not None:
        return True
    options: dict[str, Any] = {"fullgraph": True, "dynamic": False, "backend": backend}
    if backend == "inductor":
        # Modes are inductor presets; other backends (e.g. "eager" in tests) reject them.
        options["mode"] = mode
    # The bound forward, not the module: the module's state_dict keys stay unprefixed,
    # so checkpoints still load and the embedding cache sees the same features.
    compiled: Callable[..., Any] = torch.compile(encoder.forward, **options)
    encoder.forward = compiled
    setattr(encoder, _COMPILED_MARK, mode)
    return True
