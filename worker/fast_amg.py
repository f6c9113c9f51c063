"""SAM 2's automatic mask generator: Meta's records, less work per image.

`FastAutomaticMaskGenerator` takes the knobs of Meta's `SAM2AutomaticMaskGenerator`
(sam2 1.1.0; `multimask_output=True`, `use_m2m=False`, `output_mode="coco_rle"`)
and returns Meta's masks in Meta's order. The contract on every CPU, asserted by
tests/worker/test_fast_amg.py under several CPU code paths: same count, grid points
and crop boxes in the same order, each mask's IoU with Meta's >= 0.999, predicted
IoU within 1e-5, stability score within 1e-3. Bit-identical only where measured
(docs/performance.md): step 1 runs matrix products on (1, 4096, 256) where Meta's
run on (B, 4096, 256), and a BLAS may order a product's additions differently by
row count, processor and code path (MKL's generic path, `MKL_CBWR=COMPATIBLE`, does;
an AVX2-only AMD EPYC flipped one mask pixel). Doing Meta's work on Meta's shapes
instead kept little of the speed-up where thresholds remove candidates (ibid.).

What it does differently (CPU, tiny model, 1024 px: ~90% of a run is the decoder):

1. **Layer 1 of the decoder's two-way transformer is shared.** Before its first
   image-side update every point sees the same image tokens (image embedding + the
   "no mask" dense embedding + positional encoding), so the key/value projections
   of the token->image attention and the query projection of the image->token
   attention are computed once per crop instead of once per point, and the image
   embedding is never copied per point (Meta's `repeat_interleave`).
2. **Output upscaling only where a mask can survive.** The predicted IoU comes from
   the IoU token alone; the two transposed convolutions, the LayerNorm2d and the
   hypernetwork product run only for points with at least one mask above
   `pred_iou_thresh` (Meta's own filter, `iou > thresh` when thresh > 0).
3. **Full resolution only for those points**, about `upsample_chunk` masks at a
   time, by Meta's `postprocess_masks` on Meta's (points, 3, h, w) layout: torch
   picks its interpolation kernel by channel and thread count (one thread: 3
   channels take the channels-last kernel, 1 the generic one, which rounds
   differently). Stability, threshold, boxes and crop-edge filter as Meta's.
4. **Vectorised RLE.** Survivors of a chunk are encoded in one
   `pycocotools.mask.encode` call on a Fortran-ordered HxWxN uint8 array instead of
   Meta's per-mask Python loop (same counts for the same masks).

NMS within a crop, the crop boxes and the cross-crop NMS are Meta's, on the same
tensors in the same order. Decoder batches: `points_per_batch` points per call, as
in Meta's generator (so every per-point product has Meta's shape), capped at
`max_points_per_call` (default 128) to bound memory (~1.5 GB of activations at
1024 px; larger calls were not faster on CPU); the worker's out-of-memory retry
that halves `points_per_batch` works here too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torchvision.ops.boxes import batched_nms, box_area

from sam2fleet.worker import fast_decoder

DEFAULT_MAX_POINTS_PER_CALL = 128
DEFAULT_UPSAMPLE_CHUNK = 16


class FastAutomaticMaskGenerator:
    def __init__(
        self,
        model: Any,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.8,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        mask_threshold: float = 0.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "coco_rle",
        use_m2m: bool = False,
        multimask_output: bool = True,
        max_points_per_call: int = DEFAULT_MAX_POINTS_PER_CALL,
        upsample_chunk: int = DEFAULT_UPSAMPLE_CHUNK,
    ) -> None:
        from sam2.sam2_image_predictor import SAM2ImagePredictor
        from sam2.utils.amg import build_all_layer_point_grids

        if output_mode != "coco_rle":
            raise ValueError("FastAutomaticMaskGenerator emits coco_rle only")
        if use_m2m or not multimask_output:
            raise ValueError(
                "FastAutomaticMaskGenerator supports use_m2m=False, "
                "multimask_output=True only; use Meta's generator"
            )
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("exactly one of points_per_side or point_grids")
        self.point_grids = (
            build_all_layer_point_grids(
                points_per_side, crop_n_layers, crop_n_points_downscale_factor
            )
            if points_per_side is not None
            else point_grids
        )
        # Same predictor Meta's generator builds: `set_image` once per crop (the
        # pipeline wraps it), and the same mask post-processing (hole filling).
        self.predictor = SAM2ImagePredictor(
            model, max_hole_area=min_mask_region_area, max_sprinkle_area=min_mask_region_area
        )
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.mask_threshold = mask_threshold
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.min_mask_region_area = min_mask_region_area
        self.max_points_per_call = max(1, max_points_per_call)
        self.upsample_chunk = max(1, upsample_chunk)

    # ------------------------------------------------------------------ public
    @torch.no_grad()
    def generate(self, image: np.ndarray) -> list[dict[str, Any]]:
        from sam2.utils.amg import box_xyxy_to_xywh, generate_crop_boxes

        orig_size = image.shape[:2]
        crop_boxes, layer_idxs = generate_crop_boxes(
            orig_size, self.crop_n_layers, self.crop_overlap_ratio
        )
        parts = [
            self._process_crop(image, box, layer, orig_size)
            for box, layer in zip(crop_boxes, layer_idxs, strict=True)
        ]
        data = _cat(parts)
        if len(crop_boxes) > 1 and len(data["rles"]) > 0:
            scores = 1 / box_area(data["crop_boxes"])
            keep = batched_nms(
                data["boxes"].float(),
                scores,
                torch.zeros_like(data["boxes"][:, 0]),
                iou_threshold=self.crop_nms_thresh,
            )
            data = _filter(data, keep)
        arrays = {
            k: (v.float().cpu().numpy() if isinstance(v, torch.Tensor) else v)
            for k, v in data.items()
        }
        return [
            {
                "segmentation": arrays["rles"][i],
                "area": arrays["areas"][i],
                "bbox": box_xyxy_to_xywh(arrays["boxes"][i]).tolist(),
                "predicted_iou": arrays["iou_preds"][i].item(),
                "point_coords": [arrays["points"][i].tolist()],
                "stability_score": arrays["stability_score"][i].item(),
                "crop_box": box_xyxy_to_xywh(arrays["crop_boxes"][i]).tolist(),
            }
            for i in range(len(arrays["rles"]))
        ]

    # ------------------------------------------------------------------ crops
    def _process_crop(
        self, image: np.ndarray, crop_box: list[int], layer_idx: int, orig_size: tuple[int, ...]
    ) -> dict[str, Any]:
        from sam2.utils.amg import uncrop_boxes_xyxy, uncrop_points

        x0, y0, x1, y1 = crop_box
        cropped = image[y0:y1, x0:x1, :]
        crop_size = cropped.shape[:2]
        self.predictor.set_image(cropped)  # attribute lookup: model.generate's timing hook
        grids: list[np.ndarray] | None = self.point_grids
        assert grids is not None  # Meta's constructor builds them from points_per_side
        points_for_image = grids[layer_idx] * np.array(crop_size)[None, ::-1]

        shared = fast_decoder.shared_image_state(self.predictor)
        batch = max(1, min(self.points_per_batch, self.max_points_per_call))
        parts = []
        for start in range(0, len(points_for_image), batch):
            points = torch.as_tensor(
                points_for_image[start : start + batch],
                dtype=torch.float32,
                device=self.predictor.device,
            )
            parts.append(self._process_batch(points, crop_size, crop_box, orig_size, shared))
        self.predictor.reset_predictor()
        data = _cat(parts)
        if len(data["rles"]) > 0:
            keep = batched_nms(
                data["boxes"].float(),
                data["iou_preds"],
                torch.zeros_like(data["boxes"][:, 0]),
                iou_threshold=self.box_nms_thresh,
            )
            data = _filter(data, keep)
        data["boxes"] = uncrop_boxes_xyxy(data["boxes"], crop_box)
        data["points"] = uncrop_points(data["points"], crop_box)
        data["crop_boxes"] = torch.tensor([crop_box], dtype=torch.int64).repeat(
            len(data["rles"]), 1
        )
        return data

    def _process_batch(
        self,
        points: torch.Tensor,
        crop_size: tuple[int, ...],
        crop_box: list[int],
        orig_size: tuple[int, ...],
        shared: dict[str, Any],
    ) -> dict[str, Any]:
        from sam2.utils.amg import (
            batched_mask_to_box,
            calculate_stability_score,
            is_box_near_crop_edge,
            uncrop_masks,
        )

        orig_h, orig_w = orig_size
        keys, mask_tokens, iou_preds = fast_decoder.transformer(
            self.predictor, points, crop_size, shared
        )
        n_masks = iou_preds.shape[1]
        # Flat mask index = point * n_masks + mask, the order Meta flattens in.
        iou_flat = iou_preds.flatten(0, 1)
        points_flat = points.repeat_interleave(n_masks, dim=0)
        keep = (
            iou_flat > self.pred_iou_thresh
            if self.pred_iou_thresh > 0.0
            else torch.ones_like(iou_flat, dtype=torch.bool)
        )
        # Upscaling and full resolution only for points with a mask that can
        # survive; whole points, in order, about `upsample_chunk` masks per call.
        live_points = keep.view(-1, n_masks).any(dim=1).nonzero().squeeze(1)
        if len(live_points) < len(points):  # no copy of the image tokens when all live
            keys, mask_tokens = keys[live_points], mask_tokens[live_points]
        low_res = fast_decoder.low_res_masks(self.predictor, keys, mask_tokens, shared)
        del keys
        per_call = max(1, self.upsample_chunk // n_masks)
        mask_ids = torch.arange(n_masks, device=keep.device)

        out: dict[str, list[Any]] = {
            k: [] for k in ("iou_preds", "points", "stability_score", "boxes")
        }
        rles: list[dict[str, Any]] = []
        areas: list[int] = []
        for start in range(0, len(live_points), per_call):
            chunk = live_points[start : start + per_call]
            flat = (chunk[:, None] * n_masks + mask_ids).flatten()
            rows = low_res[start : start + per_call]
            logits = self.predictor._transforms.postprocess_masks(rows, crop_size)
            ok = keep[flat]
            sel, logits = flat[ok], logits.flatten(0, 1)[ok]
            stability = calculate_stability_score(
                logits, self.mask_threshold, self.stability_score_offset
            )
            ok = (
                stability >= self.stability_score_thresh
                if self.stability_score_thresh > 0.0
                else torch.ones_like(stability, dtype=torch.bool)
            )
            masks = logits[ok] > self.mask_threshold
            del logits
            sel, stability = sel[ok], stability[ok]
            boxes = batched_mask_to_box(masks)
            edge_ok = ~is_box_near_crop_edge(boxes, crop_box, [0, 0, orig_w, orig_h])
            if not torch.all(edge_ok):
                masks, sel, stability, boxes = (t[edge_ok] for t in (masks, sel, stability, boxes))
            if len(sel) == 0:
                continue
            areas.extend(int(a) for a in masks.flatten(1).sum(1, dtype=torch.int64).tolist())
            rles.extend(_encode(uncrop_masks(masks, crop_box, orig_h, orig_w)))
            out["iou_preds"].append(iou_flat[sel])
            out["points"].append(points_flat[sel])
            out["stability_score"].append(stability)
            out["boxes"].append(boxes)
        data: dict[str, Any] = {
            "iou_preds": _cat_t(out["iou_preds"], (0,), torch.float32),
            "points": _cat_t(out["points"], (0, 2), torch.float32),
            "stability_score": _cat_t(out["stability_score"], (0,), torch.float32),
            "boxes": _cat_t(out["boxes"], (0, 4), torch.int64),
            "rles": rles,
            "areas": areas,
        }
        return data

    # ------------------------------------------------------------------ decoder


def _encode(masks: torch.Tensor) -> list[dict[str, Any]]:
    """COCO compressed RLE of N x H x W bool masks in one pycocotools call."""
    arr = masks.transpose(1, 2).contiguous().cpu().numpy().view(np.uint8)  # N,W,H
    rles = mask_utils.encode(arr.transpose(2, 1, 0))  # H,W,N Fortran-ordered
    return [
        {"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode()}
        for r in rles
    ]


def _cat_t(
    parts: list[torch.Tensor], empty_shape: tuple[int, ...], dtype: torch.dtype
) -> torch.Tensor:
    return torch.cat(parts, dim=0) if parts else torch.zeros(empty_shape, dtype=dtype)


def _cat(parts: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in parts[0]:
        vals = [p[key] for p in parts]
        out[key] = (
            torch.cat(vals, dim=0)
            if isinstance(vals[0], torch.Tensor)
            else [x for v in vals for x in v]
        )
    return out


def _filter(data: dict[str, Any], keep: torch.Tensor) -> dict[str, Any]:
    idx = keep.tolist()
    return {
        k: (v[keep] if isinstance(v, torch.Tensor) else [v[i] for i in idx])
        for k, v in data.items()
    }
