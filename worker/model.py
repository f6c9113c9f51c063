"""The one module that owns SAM 2: load once, embed, predict, generate.

Everything here calls Meta's own classes (`build_sam2`, `SAM2ImagePredictor`,
`SAM2AutomaticMaskGenerator`) so the fleet's masks are the ones SAM 2 itself gives.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sam2fleet.shared.models import sha256_file
from sam2fleet.shared.schemas import AutoParams, ModelStamp, Prompt
from sam2fleet.shared.settings import Settings
from sam2fleet.worker.acceleration import autocast, compile_image_encoder, resolve_precision
from sam2fleet.worker.embed_cache import Embedding, EmbeddingCache
from sam2fleet.worker.weights import ResolvedWeights, hydra_overrides, resolve_weights

log = logging.getLogger(__name__)

# Without the optional compiled extension SAM 2 skips hole filling in its
# post-processing (it warns once); results carry a note saying so.
HAS_SAM2_EXTENSION = importlib.util.find_spec("sam2._C") is not None
NO_EXTENSION_NOTE = (
    "sam2._C is not built: hole filling of masks (min_mask_region_area) was skipped "
    "inside SAM 2's post-processing"
)


@dataclass
class ObjectMasks:
    prompt_index: int
    masks: np.ndarray  # C x H x W bool, best first
    scores: np.ndarray  # C predicted IoU
    stability: np.ndarray  # C


def _nothing() -> None:
    return None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def feature_sizes(image_size: int) -> list[tuple[int, int]]:
    # SAM2ImagePredictor hard-codes these for 1024 inputs; the backbone's strides
    # are 4, 8 and 16, so derive them from the model's actual input size.
    return [(image_size // s, image_size // s) for s in (4, 8, 16)]


class SegmentationModel:
    """SAM 2 resident on one device, with one image embedding set at a time."""

    def __init__(self, settings: Settings, weights: ResolvedWeights | None = None) -> None:
        from sam2.build_sam import build_sam2
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        self.weights = weights or resolve_weights(settings)
        self.device = resolve_device(settings.device)
        self.fast_auto = settings.fast_auto
        started = time.perf_counter()
        self.checkpoint_sha256 = sha256_file(self.weights.path)
        self.model = build_sam2(
            self.weights.spec.config,
            str(self.weights.path),
            device=str(self.device),
            mode="eval",
            hydra_overrides_extra=hydra_overrides(settings.model_image_size),
        )
        self.image_size: int = self.model.image_size
        self.precision = resolve_precision(settings.precision, self.device)
        # Lazy: the warm-up's encoder pass pays for compiling, before the worker is ready.
        self.compiled = compile_image_encoder(self.model, settings.compile_encoder)
        self.cache = EmbeddingCache(settings.embedding_cache_bytes)
        self.predictor = SAM2ImagePredictor(self.model)
        self.predictor._bb_feat_sizes = feature_sizes(self.image_size)
        self.load_seconds = time.perf_counter() - started
        self.stamp = ModelStamp(
            name=self.weights.spec.name,
            checkpoint_sha256=self.checkpoint_sha256,
            weights=self.weights.kind,
            precision=self.precision,
        )
        log.info(
            "loaded %s (%s weights, sha256 %s) on %s at %d px, %s%s, in %.1fs",
            self.stamp.name,
            self.stamp.weights,
            self.checkpoint_sha256[:12],
            self.device,
            self.image_size,
            self.precision,
            f", encoder compiled ({settings.compile_encoder})" if self.compiled else "",
            self.load_seconds,
        )

    @torch.inference_mode()
    def embed(self, image: np.ndarray, cache_key: tuple[str, ...] | None = None) -> None:
        with self._autocast():
            self.predictor.set_image(image)
        if cache_key is not None:
            self.cache.put(cache_key, self.predictor._features, self.predictor._orig_hw)

    @torch.inference_mode()
    def embed_batch(self, images: list[np.ndarray]) -> list[Embedding]:
        """Encode several images in one forward pass (cross-job batching); one
        embedding per image, each shaped as `embed` would have left it."""
        with self._autocast():
            self.predictor.set_image_batch(images)
        features, sizes = self.predictor._features, self.predictor._orig_hw
        self.predictor.reset_predictor()
        out = []
        for i, hw in enumerate(sizes):
            # Copies, not views: a view would keep the whole batch's tensors alive
            # for as long as any one image's embedding sits in the cache.
            one = {
                "image_embed": features["image_embed"][i : i + 1].clone(),
                "high_res_feats": [f[i : i + 1].clone() for f in features["high_res_feats"]],
            }
            out.append(Embedding.of(one, [tuple(hw)]))
        return out

    def use(self, item: Embedding) -> tuple[int, int]:
        """Make a stored embedding the current one; the image's (height, width)."""
        self.predictor.reset_predictor()
        self.predictor._features = item.features
        self.predictor._orig_hw = list(item.orig_hw)
        self.predictor._is_image_set = True
        height, width = item.orig_hw[0]
        return int(height), int(width)

    def restore(self, cache_key: tuple[str, ...]) -> tuple[int, int] | None:
        """Set a cached embedding as the current one; its (height, width), or None."""
        item = self.cache.get(cache_key)
        return None if item is None else self.use(item)

    @torch.inference_mode()
    def predict(self, prompts: list[Prompt], multimask: bool) -> list[ObjectMasks]:
        """Masks for each object, all from the embedding set by `embed`."""
        from sam2.utils.amg import calculate_stability_score

        out = []
        for index, prompt in enumerate(prompts):
            # One call per object: objects may differ in their number of points,
            # which SAM 2's batched decoder cannot mix in one tensor.
            with self._autocast():
                logits, scores, _ = self.predictor.predict(
                    point_coords=np.asarray(prompt.points, dtype=np.float32)
                    if prompt.points
                    else None,
                    point_labels=np.asarray(prompt.labels, dtype=np.int32)
                    if prompt.labels
                    else None,
                    box=np.asarray(prompt.box, dtype=np.float32) if prompt.box else None,
                    multimask_output=multimask,
                    return_logits=True,
                )
            threshold = self.predictor.mask_threshold
            logits_t = torch.from_numpy(logits)
            stability = calculate_stability_score(logits_t, threshold, 1.0).numpy()
            order = np.argsort(-scores, kind="stable")
            out.append(
                ObjectMasks(
                    prompt_index=index,
                    masks=(logits > threshold)[order],
                    scores=scores[order],
                    stability=stability[order],
                )
            )
        return out

    @torch.inference_mode()
    def generate(
        self, params: AutoParams, image: np.ndarray, on_crop: Callable[[], None] = _nothing
    ) -> tuple[list[dict[str, Any]], float]:
        """Automatic masks (records in COCO RLE) and the seconds the image encoder took.

        Both generators encode each crop with one `predictor.set_image` call, looked
        up on the predictor at call time; wrapping that call on this run's own
        predictor times the encoder without touching SAM 2's code. `on_crop()` runs
        before each crop's encoder pass: a safe point where it may raise to stop the
        run (cancellation) or inject a fault (tests).
        """
        generator = self.automatic_generator(params)
        predictor = generator.predictor
        encode_crop = predictor.set_image
        encoder_s = 0.0

        def timed_set_image(crop: np.ndarray) -> None:
            nonlocal encoder_s
            on_crop()
            started = time.perf_counter()
            encode_crop(crop)
            encoder_s += time.perf_counter() - started

        predictor.set_image = timed_set_image
        with self._autocast():
            records: list[dict[str, Any]] = generator.generate(image)
        return records, encoder_s

    def _autocast(self) -> Any:
        # Entered inside inference mode: there autocast keeps no low-precision copy
        # of the weights it casts (worker/acceleration.py).
        return autocast(self.device, self.precision)

    def automatic_generator(self, params: AutoParams) -> Any:
        """worker/fast_amg.py's generator (same records as Meta's, less work) with
        SAM2FLEET_FAST_AUTO, else Meta's `SAM2AutomaticMaskGenerator`."""
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

        from sam2fleet.worker.fast_amg import FastAutomaticMaskGenerator

        cls = FastAutomaticMaskGenerator if self.fast_auto else SAM2AutomaticMaskGenerator
        generator = cls(
            self.model,
            output_mode="coco_rle",
            **params.model_dump(),
        )
        generator.predictor._bb_feat_sizes = feature_sizes(self.image_size)
        return generator

    def notes(self, params: AutoParams | None) -> list[str]:
        if params is not None and params.min_mask_region_area > 0 and not HAS_SAM2_EXTENSION:
            return [NO_EXTENSION_NOTE]
        return []

    def warmup(self) -> float:
        """One real forward pass, so readiness means the model can actually run."""
        started = time.perf_counter()
        rng = np.random.default_rng(0)
        image = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
        self.embed(image)
        self.predict([Prompt(points=[[32.0, 32.0]], labels=[1])], multimask=True)
        return time.perf_counter() - started
