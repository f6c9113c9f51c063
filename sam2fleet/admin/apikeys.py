"""API keys kept in Redis by their sha256 digest, never in clear."""

from __future__ import annotations

import hashlib
import secrets

import redis

from sam2fleet.shared.records import Keys


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create(client: redis.Redis, keys: Keys, name: str) -> tuple[str, str]:
    """A new random key: stores only its digest, returns (key, digest) to show once."""
    key = "s2f_" + secrets.token_urlsafe(32)
    key_digest = digest(key)
    client.hset(keys.api_keys(), key_digest, name)
    return key, key_digest


def list_keys(client: redis.Redis, keys: Keys) -> list[tuple[str, str]]:
    return sorted((v.decode(), k.decode()) for k, v in client.hgetall(keys.api_keys()).items())


def revoke(client: redis.Redis, keys: Keys, name_or_digest: str) -> int:
    """Remove keys by name or by (a prefix of at least 8 characters of) their digest."""
    gone = [
        d
        for name, d in list_keys(client, keys)
        if name == name_or_digest or (len(name_or_digest) >= 8 and d.startswith(name_or_digest))
    ]
    if gone:
        client.hdel(keys.api_keys(), *gone)
    return len(gone)
