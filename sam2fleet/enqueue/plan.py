"""What is left to do: each image's job spec, its identity across runs, its keys.

An image's identity is `base`, the hash of its content (sha256) and its job spec:
the same file with the same options is the same work in this run and any later one;
a changed file or changed options make it new work.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from sam2fleet.enqueue.journal import Journal
from sam2fleet.enqueue.options import Options, Summary
from sam2fleet.sources import SERVED_EXTS, Item, Source


@dataclass(frozen=True)
class Planned:
    """An image to take to done: its job spec (the submit body but the image)."""

    item: Item
    spec: dict[str, Any]
    sha256: str
    base: str


@dataclass
class Plan:
    todo: deque[Planned] = field(default_factory=deque)  # jobs to collect first, then new
    bases: dict[str, str] = field(default_factory=dict)  # item key -> base, done ones too


def job_spec(item: Item, opts: Options) -> dict[str, Any] | str:
    """The submit body without the image, or the reason the item cannot be submitted."""
    mode = opts.mode or item.mode or ("prompt" if item.prompts else "auto")
    spec: dict[str, Any] = {
        "mode": mode,
        "multimask": opts.multimask,
        "output": {"format": "rle", "min_score": opts.min_score},
    }
    if opts.model:
        spec["model"] = opts.model
    if mode == "prompt":
        if not item.prompts:
            return "no prompts (use --mode auto to segment everything)"
        spec["prompts"] = item.prompts
    elif opts.auto:
        spec["auto"] = dict(opts.auto)
    return spec


def content_hash(spec: dict[str, Any], sha256: str) -> str:
    canon = json.dumps(
        {"image_sha256": sha256, "spec": spec}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canon.encode()).hexdigest()


def idempotency_key(base: str, attempt: int) -> str:
    """Same image + same spec + same attempt: the same key, in this run or a resumed one."""
    return hashlib.sha256(f"{base}:{attempt}".encode()).hexdigest()[:48]


def read_image(path: Path) -> tuple[bytes, bytes]:
    """(original bytes, bytes to send): formats the fleet does not take become PNG."""
    data = path.read_bytes()
    if path.suffix.lower() in SERVED_EXTS:
        return data, data
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        rgb = img.convert("RGBA" if "A" in img.getbands() else "RGB")
        buf = io.BytesIO()
        rgb.save(buf, format="PNG")
    return data, buf.getvalue()


def make_plan(source: Source, opts: Options, journal: Journal, summary: Summary) -> Plan:
    """Hash every file and sort the items: done before (counted), failed before and not
    to be retried, or skipped (both noted in `summary`), or work. Jobs an interrupted
    run left on the fleet come first; `opts.limit` caps the work."""
    plan = Plan()
    collect: list[Planned] = []
    new: list[Planned] = []
    for item in source.items:
        spec = job_spec(item, opts)
        if isinstance(spec, str):
            summary.skip(item.key, spec)
            continue
        try:
            sha = hashlib.sha256(item.path.read_bytes()).hexdigest()
        except OSError as exc:
            summary.fail(item.key, f"unreadable: {exc.strerror or exc}")
            continue
        planned = Planned(item, spec, sha, content_hash(spec, sha))
        plan.bases[item.key] = planned.base
        state = journal.state(item.key, planned.base)
        if state.done is not None:
            summary.already_done += 1
        elif state.pending is not None:
            collect.append(planned)
        elif state.failed and not opts.retry_failed:
            summary.skip(item.key, "failed in an earlier run (--no-retry-failed)")
        else:
            new.append(planned)
    plan.todo.extend((collect + new)[: opts.limit])
    return plan
