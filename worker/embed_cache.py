"""Recent image embeddings, kept on the model's device, least recently used first out.

SAM 2's cost is the image encoder; decoding a prompt against a stored embedding
is cheap. Interactive clients click many times on one image, so a worker keeps
the predictor state of recent images (keyed by model, owner and image id) within
a byte budget and restores it instead of encoding again.

Beside each embedding it keeps the low-resolution mask logits of the image's last
`MASKS_PER_IMAGE` prompt jobs, so a later prompt can name an earlier job's object as
the mask to refine (`mask_input.job_id`). They live in host memory (256 KiB a mask
at 1024 px input) and leave with the embedding.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

MASKS_PER_IMAGE = 16


@dataclass
class Embedding:
    features: dict[str, Any]  # SAM2ImagePredictor._features: image_embed, high_res_feats
    orig_hw: list[tuple[int, int]]
    nbytes: int
    # job id -> one C x h x w logits array per object of that job, candidates best first
    masks: OrderedDict[str, list[np.ndarray]] = field(default_factory=OrderedDict)

    @classmethod
    def of(cls, features: dict[str, Any], orig_hw: list[tuple[int, int]]) -> Embedding:
        return cls(features, list(orig_hw), _nbytes(features))


def _nbytes(features: dict[str, Any]) -> int:
    tensors = [features["image_embed"], *features["high_res_feats"]]
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


class EmbeddingCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[tuple[str, ...], Embedding] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        # A peek: neither a hit nor a miss, and no change to the eviction order.
        return key in self._items

    def get(self, key: tuple[str, ...]) -> Embedding | None:
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item

    def put(
        self, key: tuple[str, ...], features: dict[str, Any], orig_hw: list[tuple[int, int]]
    ) -> None:
        self.add(key, Embedding.of(features, orig_hw))

    def add(self, key: tuple[str, ...], item: Embedding) -> None:
        if item.nbytes > self.max_bytes:
            return  # larger than the whole budget: not worth evicting everything for
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= old.nbytes
        self._items[key] = item
        self.bytes += item.nbytes
        while self.bytes > self.max_bytes:
            _, evicted = self._items.popitem(last=False)
            self.bytes -= evicted.nbytes

    def remember(self, key: tuple[str, ...], job_id: str, low_res: list[np.ndarray]) -> None:
        """Keep a job's low-resolution logits beside its image's embedding (if still
        held); the image's oldest job beyond `MASKS_PER_IMAGE` goes."""
        item = self._items.get(key)
        if item is None:
            return
        item.masks[job_id] = low_res
        while len(item.masks) > MASKS_PER_IMAGE:
            item.masks.popitem(last=False)

    def recall(self, key: tuple[str, ...], job_id: str) -> list[np.ndarray] | None:
        """The logits `remember` kept for this job on this image, or None."""
        item = self._items.get(key)
        return None if item is None else item.masks.get(job_id)

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0
