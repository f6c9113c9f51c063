"""Recent image embeddings, kept on the model's device, least recently used first out.

SAM 2's cost is the image encoder; decoding a prompt against a stored embedding
is cheap. Interactive clients click many times on one image, so a worker keeps
the predictor state of recent images (keyed by model, owner and image id) within
a byte budget and restores it instead of encoding again.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Embedding:
    features: dict[str, Any]  # SAM2ImagePredictor._features: image_embed, high_res_feats
    orig_hw: list[tuple[int, int]]
    nbytes: int

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

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0
