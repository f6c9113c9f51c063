"""Predicted device memory of a video job, for admission (gateway and worker).

The worker tracks with its outputs pruned (worker/video_tracker.py), so a job's
memory does not depend on how many frames it tracks: only on the model's input
size, the video's resolution, the number of objects and their prompted frames.
What one job holds on the device beyond the model's weights, at its peak:

- one frame through the image encoder (`ENCODER_BYTES_PER_TOKEN_CHANNEL` x C x T,
  as worker/admission.py measured it; x 0.7 under bf16 autocast) and the frame's
  features and position encodings kept for the objects' steps, with what SAM 2
  caches on its first frame (`FEATURES_BYTES_PER_TOKEN` x T);
- per object, the outputs kept for the frames SAM 2 still reads (`lookback` + its
  prompted frames), each a bf16 memory of 64 channels at stride 16 and float32
  low-res mask logits at stride 4 (`OUTPUT_BYTES_PER_TOKEN` x T), and one step of
  memory attention and mask decoding (`STEP_BYTES_PER_TOKEN` x T, objects are
  stepped one after another);
- every object's mask at the video's resolution: float32 logits, the
  interpolation's output, and a bool copy (`BYTES_PER_VIDEO_PIXEL` per object).

T = (image_size / 4)^2. Then x `HEADROOM`. Measured on CPU (torch 2.14, 1 thread,
tiny, 6 frames, `measure_peak_bytes` around the whole tracking): a predictor's first
video peaked at 8.5 MiB at 128 px and 33.5 MiB at 256 px with one object at 160x120
(the encoder's 4.7 / 18.75 MiB plus ~3.7 KB per token: `FEATURES_BYTES_PER_TOKEN` +
`STEP_BYTES_PER_TOKEN`), later videos at 5-10 / 13-24 MiB whatever the objects
(1-3) and resolution (160x120, 640x480), fp32 or bf16. The estimate is 1.1-2.6x
those; tests/worker/test_video_memory.py keeps it between 1x and 4x. GPU
calibration is pending, as for images. No torch here.
"""

from __future__ import annotations

from sam2fleet.shared.video_schemas import VideoJobSpec

ENCODER_CHANNELS = {
    "sam2.1_hiera_tiny": 96,
    "sam2.1_hiera_small": 96,
    "sam2.1_hiera_base_plus": 112,
    "sam2.1_hiera_large": 144,
}
ENCODER_BYTES_PER_TOKEN_CHANNEL = 50
LOW_PRECISION_ENCODER = 0.7
FEATURES_BYTES_PER_TOKEN = 1536  # features, position encodings, first-frame caches
OUTPUT_BYTES_PER_TOKEN = 12  # 64 x 2 B at stride 16 (T/16) + 4 B mask logits at stride 4
STEP_BYTES_PER_TOKEN = 2304  # memory attention + the mask decoder for one object
BYTES_PER_VIDEO_PIXEL = 9
LOOKBACK = 15  # max_obj_ptrs_in_encoder - 1 of every SAM 2.1 config
HEADROOM = 1.25


def estimate_video_bytes(
    model_name: str,
    image_size: int,
    width: int,
    height: int,
    spec: VideoJobSpec,
    precision: str = "bf16",
) -> int:
    tokens = (image_size // 4) ** 2
    channels = ENCODER_CHANNELS.get(model_name, max(ENCODER_CHANNELS.values()))
    encoder = ENCODER_BYTES_PER_TOKEN_CHANNEL * channels * tokens
    if precision != "fp32":
        encoder = int(encoder * LOW_PRECISION_ENCODER)
    objects = spec.obj_ids()
    prompted = {(p.obj_id, p.frame) for p in spec.prompts}
    kept = sum(LOOKBACK + 1 + sum(1 for o, _ in prompted if o == obj) for obj in objects)
    total = (
        encoder
        + FEATURES_BYTES_PER_TOKEN * tokens
        + STEP_BYTES_PER_TOKEN * tokens
        + OUTPUT_BYTES_PER_TOKEN * tokens * kept
        + BYTES_PER_VIDEO_PIXEL * width * height * len(objects)
    )
    return int(total * HEADROOM)
