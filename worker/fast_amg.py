"""SAM 2's automatic mask generator, same records as Meta's, less work per image.

`FastAutomaticMaskGenerator` takes the knobs of Meta's `SAM2AutomaticMaskGenerator`
(sam2 1.1.0; `multimask_output=True`, `use_m2m=False`, `output_mode="coco_rle"`)
and returns the same list of records, equal field for field and bit for bit, on
any CPU.

How identity holds on any processor: every floating-point operation whose rounding
could depend on the processor or on a tensor's shape or layout is Meta's own call on
Meta's own tensors. BLAS (MKL) and oneDNN choose their kernels and blocking by
processor, shape and memory layout, so a matrix product over a shared (1, 4096, 256)
view rounds like Meta's per-point (B, 4096, 256) product on some CPUs and not on
others (an earlier version shared the decoder's first-layer projections across
points; its logits differed from Meta's in the last bit under MKL's generic code
path, `MKL_CBWR=COMPATIBLE`, and by one mask pixel on an AVX2-only AMD EPYC). So:

- The prompt encoder and the mask decoder are called exactly as Meta's
  `SAM2ImagePredictor._predict` calls them, on the same decoder batches of
  `points_per_batch` points: same inputs, shapes and layouts, so the same kernels.
- Full-resolution logits come from Meta's `postprocess_masks` on Meta's
  (points, 3, h, w) layout. Bilinear interpolation computes each output pixel from
  four pixels of its own plane, with no reduction across planes, so the number of
  points in a call does not change a value; but torch picks its kernel by the
  channel count and the thread count (with one thread, 3 channels take the
  channels-last kernel and 1 channel the generic one, which round differently), so
  whole points keep the 3 channels Meta's call has.
- Everything after that is exact: comparisons, integer counts (stability score),
  one correctly rounded division per mask, boxes, padding, RLE.

What it does differently (all of it exact, none of it floating-point reordering):

1. **Full resolution only where a mask can survive.** Meta upsamples every
   candidate of a decoder batch to the crop's full resolution before its IoU
   filter; here only points with a mask above `pred_iou_thresh` (Meta's own filter,
   `iou > thresh` when thresh > 0) are upsampled, about `upsample_chunk` masks at a
   time, which also bounds memory.
2. **No per-mask Python.** Meta builds uncompressed RLE with a Python loop over
   change indices per mask, deep-copies those lists whenever batches are
   concatenated, and compresses them one by one; here the survivors of a chunk are
   encoded in one `pycocotools.mask.encode` call on a Fortran-ordered HxWxN uint8
   array (the compressed counts are identical) and areas are pixel counts.

NMS within a crop (`batched_nms` on boxes, predicted IoU as score), the crop boxes
and the cross-crop NMS (smaller crops preferred) are Meta's, on the same tensors in
the same order, so the set and order of masks match.

Decoder batches: `points_per_batch` points per decoder call, as in Meta's
generator, capped at `max_points_per_call` (default 128) to bound memory (the
decoder holds several B x 4096 x 256 float tensors, ~0.5 GB each at B=128 and
1024 px). Identity with Meta's generator needs the same batches, so it holds for
`points_per_batch` <= `max_points_per_call`; above the cap it is not guaranteed.
The worker's out-of-memory retry that halves `points_per_batch` works here too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torchvision.ops.boxes import batched_nms, box_area

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
        self.predictor.set_image(cropped)  # attribute lookup: the pipeline's hook
        points_for_image = self.point_grids[layer_idx] * np.array(crop_size)[None, ::-1]

        batch = max(1, min(self.points_per_batch, self.max_points_per_call))
        parts = []
        for start in range(0, len(points_for_image), batch):
            points = torch.as_tensor(
                points_for_image[start : start + batch],
                dtype=torch.float32,
                device=self.predictor.device,
            )
            parts.append(self._process_batch(points, crop_size, crop_box, orig_size))
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
    ) -> dict[str, Any]:
        from sam2.utils.amg import (
            batched_mask_to_box,
            calculate_stability_score,
            is_box_near_crop_edge,
            uncrop_masks,
        )

        orig_h, orig_w = orig_size
        low_res, iou_preds = self._decode(points, crop_size)
        n_masks = iou_preds.shape[1]
        # Flat mask index = point * n_masks + mask, the order Meta flattens in.
        iou_flat = iou_preds.flatten(0, 1)
        points_flat = points.repeat_interleave(n_masks, dim=0)
        keep = (
            iou_flat > self.pred_iou_thresh
            if self.pred_iou_thresh > 0.0
            else torch.ones_like(iou_flat, dtype=torch.bool)
        )
        # Whole points go to full resolution (Meta's layout, see the module
        # docstring), in order, about `upsample_chunk` masks per call.
        live_points = keep.view(-1, n_masks).any(dim=1).nonzero().squeeze(1)
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
            logits = self.predictor._transforms.postprocess_masks(low_res[chunk], crop_size)
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
                masks, sel, stability, boxes = (
                    masks[edge_ok],
                    sel[edge_ok],
                    stability[edge_ok],
                    boxes[edge_ok],
                )
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
    def _decode(
        self, points: torch.Tensor, crop_size: tuple[int, ...]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-res logits (B,3,h,w) and predicted IoUs (B,3) of single foreground
        points: the calls of Meta's `SAM2ImagePredictor._predict` (multimask,
        `img_idx=-1`) with the same arguments, without its full-resolution step."""
        model = self.predictor.model
        feats = self.predictor._features
        in_points = self.predictor._transforms.transform_coords(
            points, normalize=True, orig_hw=crop_size
        )
        labels = torch.ones(in_points.shape[0], dtype=torch.int, device=in_points.device)
        sparse, dense = model.sam_prompt_encoder(
            points=(in_points[:, None, :], labels[:, None]), boxes=None, masks=None
        )
        low_res, iou_preds, _, _ = model.sam_mask_decoder(
            image_embeddings=feats["image_embed"][-1].unsqueeze(0),
            image_pe=model.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
            repeat_image=in_points.shape[0] > 1,
            high_res_features=[f[-1].unsqueeze(0) for f in feats["high_res_feats"]],
        )
        return low_res, iou_preds


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
