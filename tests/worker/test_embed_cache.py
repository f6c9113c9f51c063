"""The embedding cache: LRU within a byte budget."""

from __future__ import annotations

import torch

from sam2fleet.worker.embed_cache import EmbeddingCache


def features(mb: int) -> dict:
    n = mb * (1 << 20) // 4
    return {"image_embed": torch.zeros(n), "high_res_feats": [torch.zeros(1), torch.zeros(1)]}


def test_least_recently_used_goes_first_within_the_budget() -> None:
    cache = EmbeddingCache(max_bytes=3 * (1 << 20) + 64)
    for name in ("a", "b", "c"):
        cache.put((name,), features(1), [(10, 20)])
    assert len(cache) == 3
    assert cache.get(("a",)) is not None  # a is now the most recent
    cache.put(("d",), features(1), [(10, 20)])
    assert cache.get(("b",)) is None and cache.get(("a",)) is not None
    assert cache.bytes <= cache.max_bytes
    assert (cache.hits, cache.misses) == (2, 1)


def test_an_item_over_the_whole_budget_is_not_cached() -> None:
    cache = EmbeddingCache(max_bytes=1 << 20)
    cache.put(("big",), features(2), [(1, 1)])
    assert len(cache) == 0 and cache.bytes == 0


def test_replacing_a_key_keeps_the_byte_count_right() -> None:
    cache = EmbeddingCache(max_bytes=10 << 20)
    cache.put(("a",), features(1), [(1, 1)])
    cache.put(("a",), features(2), [(1, 1)])
    assert len(cache) == 1 and cache.bytes == 2 * (1 << 20) + 8
    cache.clear()
    assert cache.bytes == 0 and cache.get(("a",)) is None
