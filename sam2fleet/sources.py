"""What `sam2fleet enqueue` reads: a folder, a glob, a JSONL manifest or a COCO file.

Each source becomes a list of `Item`s: one image file, its prompts in the API's
shape (or none: automatic mode), and per prompt the metadata the COCO output
links back to (category, source annotation id).
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# What the fleet accepts as is, and what the client converts to PNG first.
SERVED_EXTS = {".png", ".jpg", ".jpeg", ".webp"}
CONVERTED_EXTS = {".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}
IMAGE_EXTS = SERVED_EXTS | CONVERTED_EXTS
PROMPT_FIELDS = ("points", "labels", "box")
DEFAULT_CATEGORY = {"id": 1, "name": "object"}


class SourceError(ValueError):
    """The source cannot be read (bad manifest line, missing file, ...)."""


@dataclass
class Item:
    key: str  # identity within the output folder: relative path or manifest id
    path: Path
    file_name: str  # as written in the COCO output
    prompts: list[dict[str, Any]] = field(default_factory=list)  # API shape only
    prompt_meta: list[dict[str, Any]] = field(default_factory=list)  # category_id, ...
    image_id: int | None = None  # COCO image id, when the source names one
    mode: str | None = None  # per-item override (manifest `mode`)
    safe_name: str = ""  # file-system name of its outputs


@dataclass
class Source:
    kind: str
    items: list[Item]
    categories: list[dict[str, Any]]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)
    default_category_id: int = 1  # for prompts without a category, and automatic mode


def load_source(
    spec: str | Path, *, images_dir: Path | None = None, exclude: Path | None = None
) -> Source:
    """Read SOURCE as the enqueue command does; see docs/client.md for the formats."""
    text = str(spec)
    path = Path(text)
    if path.is_dir():
        source = _folder(path, exclude)
    elif path.is_file() and path.suffix.lower() == ".jsonl":
        source = _manifest(path, images_dir)
    elif path.is_file() and path.suffix.lower() == ".json":
        source = _coco(path, images_dir)
    elif path.is_file() and path.suffix.lower() in IMAGE_EXTS:
        source = Source("file", [Item(path.name, path, path.name)], [DEFAULT_CATEGORY])
    elif glob.has_magic(text):
        source = _glob(text, exclude)
    elif not path.exists():
        raise SourceError(f"{text}: no such file, folder or matching glob")
    else:
        raise SourceError(f"{text}: not a folder, glob, .jsonl manifest, COCO .json or image")
    _assign_safe_names(source.items)
    return source


# --- folders and globs --------------------------------------------------------------


def _image_files(paths: Iterable[Path], exclude: Path | None) -> list[Path]:
    excluded = exclude.resolve() if exclude is not None else None
    out = []
    for p in paths:
        if not p.is_file() or p.suffix.lower() not in IMAGE_EXTS:
            continue
        if any(part.startswith(".") for part in p.parts if part not in (".", "..")):
            continue
        if excluded is not None and p.resolve().is_relative_to(excluded):
            continue
        out.append(p)
    return out


def _folder(root: Path, exclude: Path | None) -> Source:
    files = sorted(
        _image_files(root.rglob("*"), exclude), key=lambda p: p.relative_to(root).as_posix()
    )
    items = []
    for p in files:
        rel = p.relative_to(root).as_posix()
        items.append(Item(rel, p, rel))
    return Source("folder", items, [DEFAULT_CATEGORY])


def _glob(pattern: str, exclude: Path | None) -> Source:
    parts = Path(pattern).parts
    base_parts = []
    for part in parts:
        if glob.has_magic(part):
            break
        base_parts.append(part)
    base = Path(*base_parts) if base_parts else Path(".")
    files = sorted(_image_files((Path(p) for p in glob.glob(pattern, recursive=True)), exclude))
    items = []
    for p in files:
        rel = p.relative_to(base).as_posix() if p.is_relative_to(base) else p.as_posix()
        items.append(Item(rel, p, rel))
    return Source("glob", items, [DEFAULT_CATEGORY])


# --- JSONL manifest -------------------------------------------------------------------


def _split_prompt(raw: Any, where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    if not isinstance(raw, dict):
        raise SourceError(f'{where}: a prompt is an object like {{"box": [x1, y1, x2, y2]}}')
    api = {k: raw[k] for k in PROMPT_FIELDS if k in raw}
    meta = {k: v for k, v in raw.items() if k not in PROMPT_FIELDS}
    if "points" in api and "labels" not in api:
        api["labels"] = [1] * len(api["points"])  # a bare click means "this object"
    return api, meta


def _manifest(path: Path, images_dir: Path | None) -> Source:
    base = images_dir or path.parent
    items: list[Item] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{path.name}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SourceError(f"{where}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise SourceError(f"{where}: each line is a JSON object")
            name = row.get("image") or row.get("path") or row.get("file_name")
            if not isinstance(name, str):
                raise SourceError(f'{where}: needs "image": "path/to/file"')
            raw_prompts = list(row.get("prompts") or [])
            # Shorthand of the common tutorial shape: a list of boxes, or one click set.
            raw_prompts += [{"box": b} for b in row.get("boxes") or []]
            if row.get("points"):
                raw_prompts.append(
                    {
                        "points": row["points"],
                        "labels": row.get("labels") or [1] * len(row["points"]),
                    }
                )
            prompts, meta = [], []
            for raw in raw_prompts:
                api, m = _split_prompt(raw, where)
                prompts.append(api)
                meta.append(m)
            key = str(row.get("id") or name)
            seen[key] = seen.get(key, 0) + 1
            if seen[key] > 1:  # the same image twice with other prompts: both are work
                key = f"{key}#{seen[key]}"
            image_path = Path(name) if Path(name).is_absolute() else base / name
            image_id = row.get("image_id")
            items.append(
                Item(
                    key,
                    image_path,
                    name,
                    prompts,
                    meta,
                    image_id if isinstance(image_id, int) else None,
                    row.get("mode"),
                )
            )
    return _with_categories(Source("manifest", items, []))


def _with_categories(source: Source) -> Source:
    """Numeric `category_id`s are kept; `category` names get the next free ids; prompts
    with neither (and automatic mode) fall into one default category, "object"."""
    metas = [m for it in source.items for m in it.prompt_meta]
    numeric = {m["category_id"] for m in metas if isinstance(m.get("category_id"), int)}
    next_id = max(numeric, default=0) + 1
    names: dict[str, int] = {}
    for m in metas:
        if "category_id" not in m and isinstance(m.get("category"), str):
            if m["category"] not in names:
                names[m["category"]] = next_id
                next_id += 1
            m["category_id"] = names[m["category"]]
    cats = [{"id": i, "name": str(i)} for i in sorted(numeric)]
    cats += [{"id": i, "name": n} for n, i in names.items()]
    source.default_category_id = next_id if cats else 1
    cats.append({"id": source.default_category_id, "name": "object"})
    source.categories = cats
    return source


# --- COCO annotations ------------------------------------------------------------------


def _coco(path: Path, images_dir: Path | None) -> Source:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SourceError(f"{path}: not JSON ({exc.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise SourceError(f'{path}: a COCO file has an "images" list (and "annotations")')
    base = images_dir or path.parent
    by_image: dict[Any, list[dict[str, Any]]] = {}
    for ann in data.get("annotations") or []:
        by_image.setdefault(ann.get("image_id"), []).append(ann)
    items: list[Item] = []
    skipped: list[tuple[str, str]] = []
    for img in data["images"]:
        name = img["file_name"]
        w, h = img.get("width"), img.get("height")
        prompts, meta = [], []
        for ann in sorted(by_image.get(img["id"], []), key=lambda a: a.get("id", 0)):
            bbox = ann.get("bbox")
            if not bbox or len(bbox) != 4:
                continue
            x, y, bw, bh = (float(v) for v in bbox)
            x1, y1, x2, y2 = x, y, x + bw, y + bh
            if w and h:  # COCO boxes may overrun the border by rounding
                x1, y1 = max(0.0, x1), max(0.0, y1)
                x2, y2 = min(float(w), x2), min(float(h), y2)
            if x2 <= x1 or y2 <= y1:
                continue
            prompts.append({"box": [x1, y1, x2, y2]})
            meta.append(
                {"category_id": ann.get("category_id", 1), "source_annotation_id": ann.get("id")}
            )
        items.append(Item(name, base / name, name, prompts, meta, img["id"]))
    cats = list(data.get("categories") or [])
    ids = {c["id"] for c in cats}
    default = 1 if not cats else max(ids) + 1
    cats.append({"id": default, "name": "object"})  # automatic-mode masks, if any
    return Source("coco", items, cats, skipped, default)


# --- output names ------------------------------------------------------------------------


def _assign_safe_names(items: list[Item]) -> None:
    used: set[str] = set()
    for item in items:
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", item.key.replace("/", "__")).strip("._") or "x"
        if name in used:
            name = f"{name}-{hashlib.sha256(item.key.encode()).hexdigest()[:8]}"
        used.add(name)
        item.safe_name = name
