"""Low-resolution mask logits on the wire: the `logits` output and `mask_input` back.

SAM's mask decoder answers each object with logits at a quarter of the model's input
size (256x256 for the 1024 px SAM 2.1 models). Fed back with the next click, they let
SAM refine the previous mask instead of starting over, as its own demos do. On the
wire they are the array's raw bytes, row-major and little-endian, in base64: float16
by default (128 KiB a mask; SAM clamps them to ±32, well inside float16's range).
"""

from __future__ import annotations

import base64
import binascii

import numpy as np

from sam2fleet.shared.errors import InvalidInput
from sam2fleet.shared.schemas import Logits

DEFAULT_IMAGE_SIZE = 1024  # every SAM 2.1 variant's input size
_DTYPES: dict[str, np.dtype[np.floating]] = {
    "float16": np.dtype("<f2"),
    "float32": np.dtype("<f4"),
}


def low_res_side(image_size: int | None) -> int:
    """The logits' height and width for a model of this input size."""
    return (image_size or DEFAULT_IMAGE_SIZE) // 4


def encode_logits(array: np.ndarray) -> dict[str, object]:
    """A HxW float array as the `logits` output gives it (float16)."""
    half = np.ascontiguousarray(array, dtype=_DTYPES["float16"])
    return {
        "data": base64.b64encode(half.tobytes()).decode(),
        "shape": [int(array.shape[0]), int(array.shape[1])],
        "dtype": "float16",
    }


def decode_logits(logits: Logits, side: int, where: str) -> np.ndarray:
    """The float32 array of sent logits; `InvalidInput` naming `where` when its shape
    is not `side` x `side`, its bytes do not fill that shape, or a value is NaN or
    infinite."""
    if logits.shape != [side, side]:
        raise InvalidInput(
            f"{where}: shape {logits.shape}; this fleet's model takes [{side}, {side}] "
            "(the `logits` output of an earlier job gives them)"
        )
    dtype = _DTYPES[logits.dtype]
    want = side * side * dtype.itemsize
    # 4 base64 characters carry 3 bytes: refuse before decoding something far too big.
    if len(logits.data) * 3 // 4 > want + 2:
        raise InvalidInput(f"{where}: {len(logits.data)} base64 characters; {want} bytes expected")
    try:
        raw = base64.b64decode(logits.data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{where}: data is not valid base64") from None
    if len(raw) != want:
        raise InvalidInput(
            f"{where}: {len(raw)} bytes; [{side}, {side}] {logits.dtype} is {want} bytes"
        )
    array: np.ndarray = np.frombuffer(raw, dtype=dtype).reshape(side, side).astype(np.float32)
    if not np.isfinite(array).all():
        raise InvalidInput(f"{where}: NaN or infinite values")
    return array
