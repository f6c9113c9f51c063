"""Fetch Meta's SAM 2.1 checkpoints, resumably, and refuse any file whose sha256 is not pinned.

Why resume: the checkpoints are 150-900 MB and are pulled onto fresh GPU workers, often over
links that drop. Starting over after a reset at 90 % of the large model wastes minutes of
expensive machine time, so a broken transfer leaves ``<file>.part`` behind and the next call
continues it with an HTTP ``Range`` request.

Why the pin: a checkpoint is loaded with ``torch.load``, i.e. it is executable input, and the
upstream URL is a plain CDN path that could change or be truncated. Every file is checked against
the sha256 pinned in `sam2fleet.shared.models` before it ever gets its final name, so a worker
either has the exact bytes Meta published or nothing. A caller may pin a different hash with
``expected_sha256``.

Deliberately free of torch so the gateway and CLI can pre-fetch weights without the model stack.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import httpx
from tqdm import tqdm

from sam2fleet.shared.models import ModelSpec, sha256_file

DEFAULT_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class ChecksumMismatch(Exception):
    def __init__(self, path: Path, expected: str, actual: str) -> None:
        super().__init__(f"{path}: sha256 mismatch: expected {expected}, got {actual}")
        self.path, self.expected, self.actual = path, expected, actual


class DownloadError(Exception):
    def __init__(self, url: str, cause: object) -> None:
        super().__init__(f"download of {url} failed: {cause}")
        self.url, self.cause = url, cause


def download_checkpoint(
    spec: ModelSpec,
    dest_dir: Path,
    *,
    base_url: str = DEFAULT_BASE_URL,
    expected_sha256: str | None = None,
    progress: bool = True,
    timeout: float = 30.0,
    client: httpx.Client | None = None,
) -> Path:
    """Return ``dest_dir/spec.filename``, downloading or resuming it and verifying its sha256.

    Raises DownloadError on network/HTTP/disk failures (the ``.part`` is kept for a resume) and
    ChecksumMismatch when the finished bytes are wrong (the ``.part`` is deleted).
    """
    dest_dir = Path(dest_dir)
    final = dest_dir / spec.filename
    part = dest_dir / (spec.filename + ".part")
    want = (expected_sha256 or spec.sha256).lower()

    # A stale or corrupt final file is not deleted here: it is overwritten atomically below,
    # so a concurrent reader never sees it vanish.
    if final.is_file() and sha256_file(final) == want:
        return final

    dest_dir.mkdir(parents=True, exist_ok=True)
    url = f"{base_url.rstrip('/')}/{spec.filename}"
    own_client = client is None
    if client is None:
        client = httpx.Client(timeout=timeout, follow_redirects=True)
    try:
        _fetch(client, url, part, spec, progress=progress, timeout=timeout)
    finally:
        if own_client:
            client.close()

    actual = sha256_file(part)
    if actual != want:
        # Resuming onto bytes already known to be wrong could never succeed; start clean next time.
        part.unlink(missing_ok=True)
        raise ChecksumMismatch(part, want, actual)
    os.replace(part, final)
    return final


def _fetch(
    client: httpx.Client, url: str, part: Path, spec: ModelSpec, *, progress: bool, timeout: float
) -> None:
    offset = part.stat().st_size if part.is_file() else 0
    # Byte ranges address the encoded representation, so ask for none: the bytes on disk must be
    # the file itself for the offset (and the hash) to mean anything.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        with client.stream(
            "GET", url, headers=headers, follow_redirects=True, timeout=timeout
        ) as resp:
            if resp.status_code == 416 and offset:
                # Nothing left past our offset: the part is (claims to be) complete, and the
                # hash check decides whether that is true.
                return
            if resp.status_code == 206 and offset:
                m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
                if not m or int(m.group(1)) != offset:
                    # Appending a range that does not start at our offset would splice the file.
                    part.unlink(missing_ok=True)
                    raise DownloadError(url, f"unusable Content-Range for offset {offset}")
                mode = "ab"
                total = int(m.group(3)) if m.group(3) != "*" else spec.bytes
            elif resp.status_code == 200:
                # Server ignored the Range header and is sending the whole file: start over.
                offset, mode = 0, "wb"
                total = int(resp.headers.get("Content-Length", spec.bytes))
            else:
                raise DownloadError(url, f"HTTP {resp.status_code}")

            with (
                open(part, mode) as out,
                tqdm(
                    total=total,
                    initial=offset,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=spec.filename,
                    file=sys.stderr,
                    disable=not progress,
                ) as bar,
            ):
                # Unchunked raw iteration: a chunker would hold back up to a chunk of received
                # bytes that are lost, not resumable, when the connection drops.
                for block in resp.iter_raw():
                    out.write(block)
                    bar.update(len(block))
    except (httpx.HTTPError, OSError) as exc:
        raise DownloadError(url, exc) from exc
