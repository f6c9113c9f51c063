"""The video oracle: Meta's `SAM2VideoPredictor` as Meta runs it, in this process.

Built by `build_sam2_video_predictor` from the test checkpoint, fed through Meta's own
`init_state` and frame loader: the frames (decoded by the test with PyAV) are written
losslessly as PNG under the numbered `.jpg` names Meta's loader lists (Pillow reads
them by content), so the predictor sees exactly the decoded pixels. Run under bf16
autocast, as Meta's examples do; "fp32" runs the same calls without autocast.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from tests.oracle import rle


@lru_cache(maxsize=2)
def video_predictor(checkpoint: Path, image_size: int) -> Any:
    from sam2.build_sam import build_sam2_video_predictor

    overrides = [] if image_size == 1024 else [f"++model.image_size={image_size}"]
    return build_sam2_video_predictor(
        "configs/sam2.1/sam2.1_hiera_t.yaml",
        str(checkpoint),
        device="cpu",
        hydra_overrides_extra=overrides,
    )


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """CPU results depend on the thread count (reduction order): the fleet's video
    workers in the tests run one torch thread, so the oracle does too."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def init_state(predictor: Any, frames: list[np.ndarray], folder: Path) -> dict[str, Any]:
    for i, img in enumerate(frames):
        Image.fromarray(img).save(folder / f"{i:05d}.jpg", format="PNG")
    return predictor.init_state(str(folder))


def track(
    checkpoint: Path,
    image_size: int,
    frames: list[np.ndarray],
    prompts: list[dict[str, Any]],
    direction: str = "forward",
    precision: str = "bf16",
) -> dict[int, dict[int, str]]:
    """{frame: {obj_id: RLE counts}} for every frame SAM 2 yields, prompts added in order."""
    predictor = video_predictor(checkpoint, image_size)
    compute = (
        torch.autocast("cpu", dtype=torch.bfloat16)
        if precision == "bf16"
        else contextlib.nullcontext()
    )
    out: dict[int, dict[int, str]] = {}
    with tempfile.TemporaryDirectory() as tmp, one_thread(), torch.inference_mode(), compute:
        state = init_state(predictor, frames, Path(tmp))
        for p in prompts:
            if "mask" in p:
                predictor.add_new_mask(state, p["frame"], p["obj_id"], p["mask"])
            else:
                predictor.add_new_points_or_box(
                    state,
                    frame_idx=p["frame"],
                    obj_id=p["obj_id"],
                    points=np.array(p["points"], np.float32) if "points" in p else None,
                    labels=np.array(p["labels"], np.int32) if "labels" in p else None,
                    box=np.array(p["box"], np.float32) if "box" in p else None,
                )
        passes = {"forward": [False], "backward": [True], "both": [False, True]}[direction]
        for reverse in passes:
            for frame, obj_ids, masks in predictor.propagate_in_video(state, reverse=reverse):
                out.setdefault(
                    frame, {oid: rle((masks[k, 0] > 0.0).numpy()) for k, oid in enumerate(obj_ids)}
                )
    return out
