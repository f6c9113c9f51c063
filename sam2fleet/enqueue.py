"""`sam2fleet enqueue`: a folder, glob, manifest or COCO file through the fleet.

Output folder layout (see docs/client.md):

    DIR/state.jsonl       append-only journal: submitted / done / failed per image
    DIR/run.json          the options of the latest run
    DIR/jobs/<name>.json  per image: the source item, the job spec, the job record
    DIR/results.json      COCO dataset of every image done so far
    DIR/detections.json   the same annotations as a COCO results list
    DIR/masks/<name>/     optional: one 0/255 PNG per mask
    DIR/overlays/<name>.png   optional: image + coloured masks + prompts

Resume: an image is done when the journal holds a `done` entry for the same file
content and job spec. A re-run skips those, re-attaches to jobs submitted but not
collected before an interruption, and retries failed ones under a fresh
idempotency key. Every submit carries a key derived from the image's sha256, the
job spec and the attempt number, so a retried submit never makes a second job.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import json
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx
import numpy as np
from PIL import Image

from sam2fleet import coco
from sam2fleet.client import ApiError, AsyncClient, Job, RetryPolicy, WaitTimeout
from sam2fleet.sources import SERVED_EXTS, Item, Source, SourceError, load_source

CONCURRENCY_ENV = "SAM2FLEET_CONCURRENCY"
AUTO_KNOBS = (
    "points_per_side",
    "points_per_batch",
    "pred_iou_thresh",
    "stability_score_thresh",
    "stability_score_offset",
    "box_nms_thresh",
    "crop_n_layers",
    "crop_nms_thresh",
    "crop_n_points_downscale_factor",
    "min_mask_region_area",
)


@dataclass
class Options:
    server: str | None = None
    api_key: str | None = None
    mode: str | None = None  # None: prompt for items with prompts, else auto
    model: str | None = None
    concurrency: int | None = None  # None: SAM2FLEET_CONCURRENCY, else from the fleet size
    multimask: bool = False
    auto: dict[str, Any] = field(default_factory=dict)
    min_score: float = 0.0
    png_masks: bool = False
    overlays: bool = False
    job_timeout_s: float = 600.0
    retry_failed: bool = True
    limit: int | None = None
    images_dir: Path | None = None
    progress: bool = True


@dataclass
class Outcome:
    key: str
    status: str  # done | failed | skipped | interrupted
    reason: str = ""


@dataclass
class Summary:
    total: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0
    already_done: int = 0
    interrupted: int = 0
    in_flight_left: int = 0
    masks: int = 0
    elapsed_s: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    skips: list[tuple[str, str]] = field(default_factory=list)
    results_path: Path | None = None
    stopped: str = ""  # why the run stopped early, if it did

    @property
    def images_per_s(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def exit_code(self) -> int:
        if self.stopped == "interrupted":
            return 130
        if self.stopped:
            return 2
        return 1 if self.failed else 0


# --- the journal ------------------------------------------------------------------------


class Journal:
    """Append-only JSONL; one line per event, flushed at once (a crash loses no line
    that was written; a torn last line is ignored when read back)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.events: list[dict[str, Any]] = []
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a crash mid-write
                if isinstance(event, dict) and "event" in event:
                    self.events.append(event)
        self._fh: TextIO = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def append(self, **event: Any) -> None:
        event["t"] = round(time.time(), 3)
        with self._lock:
            self._fh.write(json.dumps(event) + "\n")
            self._fh.flush()
            self.events.append(event)

    def close(self) -> None:
        self._fh.close()

    def state(self, key: str, base: str) -> tuple[dict[str, Any] | None, str | None, int]:
        """(the done event, a job submitted but not collected, failed attempts) of an item
        with this content+spec hash."""
        done, pending, failed = None, None, 0
        for e in self.events:
            if e.get("key") != key or e.get("base") != base:
                continue
            if e["event"] == "done":
                done, pending = e, None
            elif e["event"] == "failed":
                failed += 1
                pending = None
            elif e["event"] == "submitted":
                pending = e["job_id"]
        return done, pending, failed


# --- job specs and keys --------------------------------------------------------------------


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


# --- outputs --------------------------------------------------------------------------------


def write_outputs(
    out: Path, item: Item, spec: dict[str, Any], job: Job, sha256: str, opts: Options
) -> dict[str, Any]:
    record = {
        "item": {
            "key": item.key,
            "path": str(item.path.resolve()),
            "file_name": item.file_name,
            "sha256": sha256,
            "image_id": item.image_id,
            "prompt_meta": item.prompt_meta,
        },
        "spec": spec,
        "job": job.raw,
    }
    coco.atomic_write_text(out / "jobs" / f"{item.safe_name}.json", json.dumps(record))
    if opts.png_masks or opts.overlays:
        assert job.result is not None
        masks = job.result.decode_masks()
        if opts.png_masks:
            folder = out / "masks" / item.safe_name
            folder.mkdir(parents=True, exist_ok=True)
            for k, m in enumerate(masks):
                Image.fromarray(m.astype(np.uint8) * 255).save(folder / f"{k:03d}.png")
        if opts.overlays:
            from sam2fleet.overlay import overlay_from_result

            with Image.open(item.path) as img:
                pic = overlay_from_result(img, job.raw["result"], prompts=spec.get("prompts"))
            (out / "overlays").mkdir(exist_ok=True)
            pic.save(out / "overlays" / f"{item.safe_name}.png", optimize=True)
    return record


def write_coco(out: Path, source: Source, journal: Journal, bases: dict[str, str]) -> Path:
    """results.json + detections.json from every item of this source done so far."""
    records = []
    for item in source.items:
        base = bases.get(item.key)
        if base is None:
            continue
        done, _, _ = journal.state(item.key, base)
        if done is None:
            continue
        path = out / "jobs" / f"{item.safe_name}.json"
        try:
            records.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            continue
    dataset = coco.build(
        records,
        source.categories,
        source.default_category_id,
        f"sam2fleet enqueue of {len(records)} images",
    )
    return coco.write(dataset, out)[0]


# --- the run ---------------------------------------------------------------------------------


class _Progress:
    def __init__(self, total: int, enabled: bool, stream: TextIO) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                unit="img",
                dynamic_ncols=True,
                file=stream,
                desc="enqueue",
                smoothing=0.1,
                mininterval=0.25,
            )
        self.failed = 0
        self.in_flight = 0

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(
                f"failed={self.failed} in flight={self.in_flight}", refresh=False
            )
            self.bar.update(n)

    def refresh(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"failed={self.failed} in flight={self.in_flight}")

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.refresh()
            self.bar.close()


async def _race(coro: Any, stop: asyncio.Event) -> Any:
    """The coroutine's value, or None (and the coroutine cancelled) once `stop` is set."""
    task = asyncio.ensure_future(coro)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    return None


async def run_async(
    source: Source,
    out: Path,
    opts: Options,
    *,
    stop: asyncio.Event | None = None,
    on_event: Callable[[str, str], None] | None = None,
    stream: TextIO | None = None,
) -> Summary:
    stream = stream or sys.stderr
    out.mkdir(parents=True, exist_ok=True)
    (out / "jobs").mkdir(exist_ok=True)
    stop = stop or asyncio.Event()
    summary = Summary(total=len(source.items), skips=list(source.skipped))
    summary.skipped = len(source.skipped)
    started = time.monotonic()
    journal = Journal(out / "state.jsonl")
    opts_dict = {
        k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items() if k != "api_key"
    }
    coco.atomic_write_text(
        out / "run.json",
        json.dumps(
            {
                "source_kind": source.kind,
                "items": len(source.items),
                "options": opts_dict,
                "started_at": time.time(),
            },
            indent=2,
        ),
    )

    # Plan: hash every file (content + spec decides "already done"), in a thread.
    bases: dict[str, str] = {}
    specs: dict[str, dict[str, Any]] = {}
    shas: dict[str, str] = {}
    todo: deque[Item] = deque()
    pending_first: list[Item] = []

    def plan() -> None:
        for item in source.items:
            spec = job_spec(item, opts)
            if isinstance(spec, str):
                summary.skipped += 1
                summary.skips.append((item.key, spec))
                continue
            try:
                sha = hashlib.sha256(item.path.read_bytes()).hexdigest()
            except OSError as exc:
                summary.failed += 1
                summary.failures.append((item.key, f"unreadable: {exc.strerror or exc}"))
                continue
            base = content_hash(spec, sha)
            bases[item.key], specs[item.key], shas[item.key] = base, spec, sha
            done, pending, failed = journal.state(item.key, base)
            if done is not None:
                summary.already_done += 1
            elif failed and pending is None and not opts.retry_failed:
                summary.skipped += 1
                summary.skips.append((item.key, "failed in an earlier run (--no-retry-failed)"))
            elif pending is not None:
                pending_first.append(item)
            else:
                todo.append(item)

    await asyncio.to_thread(plan)
    todo.extendleft(reversed(pending_first))  # collect interrupted jobs first
    if opts.limit is not None:
        while len(todo) > opts.limit:
            todo.pop()

    client = AsyncClient(
        opts.server,
        opts.api_key,
        timeout=60.0,
        retry=RetryPolicy(max_retries=8, backoff_s=0.5, max_backoff_s=20.0),
    )
    progress: _Progress | None = None
    try:
        concurrency = opts.concurrency or int(os.environ.get(CONCURRENCY_ENV) or 0)
        if not concurrency:
            concurrency = await _default_concurrency(client, opts.model)
        progress = _Progress(len(todo), opts.progress, stream)
        work = todo
        fatal: list[str] = []

        async def process(item: Item) -> bool:
            """Take one image to done or failed; False when the run stopped first."""
            base, spec, sha = bases[item.key], specs[item.key], shas[item.key]
            _, pending, attempts = journal.state(item.key, base)
            job: Job | None = None
            if pending is not None:  # submitted before an interruption: collect it
                try:
                    job = await client.get(pending)
                except ApiError as exc:
                    if exc.status != 404:
                        raise
                    job = None  # expired: submit again
            if job is None:
                if stop.is_set():
                    return False
                ikey = idempotency_key(base, attempts)
                original, payload = await asyncio.to_thread(read_image, item.path)
                if hashlib.sha256(original).hexdigest() != sha:
                    raise RuntimeError("file changed while the run was going on")
                body = {**spec, "image": base64.b64encode(payload).decode()}
                # Not raced against `stop`: a submit in progress completes and is journaled,
                # so an interrupted run never leaves an unrecorded job behind.
                job = await client.submit_body(body, idempotency_key=ikey)
                journal.append(
                    event="submitted", key=item.key, base=base, job_id=job.id, idempotency_key=ikey
                )
            if not job.done:
                job = await _race(client.wait(job.id, timeout=opts.job_timeout_s), stop)
                if job is None:
                    summary.interrupted += 1
                    return False
            if job.succeeded:
                record = await asyncio.to_thread(write_outputs, out, item, spec, job, sha, opts)
                journal.append(
                    event="done",
                    key=item.key,
                    base=base,
                    job_id=job.id,
                    masks=len(record["job"]["result"]["masks"]),
                )
                summary.done += 1
                summary.masks += len(record["job"]["result"]["masks"])
                if on_event:
                    on_event("done", item.key)
            else:  # failed or cancelled: recorded; the next run retries it
                err = job.error or {"type": job.status, "message": f"job {job.status}"}
                _fail(item, base, job.id, err["type"], err["message"])
            return True

        def _fail(item: Item, base: str, job_id: str | None, type_: str, message: str) -> None:
            journal.append(
                event="failed",
                key=item.key,
                base=base,
                job_id=job_id,
                error={"type": type_, "message": message},
            )
            summary.failed += 1
            summary.failures.append((item.key, f"{type_}: {message}"))
            assert progress is not None
            progress.failed += 1
            if on_event:
                on_event("failed", item.key)

        async def worker() -> None:
            assert progress is not None
            while work and not stop.is_set():
                item = work.popleft()
                progress.in_flight += 1
                finished = True
                try:
                    finished = await process(item)
                except ApiError as exc:
                    if exc.status in (401, 403):
                        fatal.append(
                            f"the server refused the API key ({exc.status} "
                            f"{exc.type}: {exc.message})"
                        )
                        stop.set()
                        finished = False
                    else:
                        _fail(item, bases[item.key], None, exc.type, exc.message)
                except WaitTimeout as exc:
                    with contextlib.suppress(ApiError, httpx.HTTPError):
                        await client.cancel(exc.job.id)
                    _fail(
                        item,
                        bases[item.key],
                        exc.job.id,
                        "timeout",
                        f"not finished after {opts.job_timeout_s:g} s; cancelled",
                    )
                except httpx.HTTPError as exc:
                    fatal.append(f"cannot reach {client.server}: {type(exc).__name__}: {exc}")
                    stop.set()
                    finished = False
                except (OSError, ValueError, RuntimeError) as exc:
                    _fail(item, bases[item.key], None, "client", f"{type(exc).__name__}: {exc}")
                finally:
                    progress.in_flight -= 1
                if finished:
                    progress.update()

        workers = [asyncio.create_task(worker()) for _ in range(max(1, concurrency))]
        await asyncio.gather(*workers)
        if fatal:
            summary.stopped = fatal[0]
        elif stop.is_set():
            summary.stopped = "interrupted"
        summary.in_flight_left = summary.interrupted
    finally:
        if progress is not None:
            progress.close()
        await client.aclose()
        summary.results_path = await asyncio.to_thread(write_coco, out, source, journal, bases)
        journal.close()
        summary.elapsed_s = time.monotonic() - started
    return summary


async def _default_concurrency(client: AsyncClient, model: str | None) -> int:
    """Enough jobs in flight to keep every worker busy while results travel back
    (about four per warm worker), without flooding the queue."""
    models = await client.models()
    chosen = [m for m in models if (m["name"] == model if model else m.get("default"))]
    workers = sum(int(m.get("workers", 0)) for m in chosen)
    return max(4, min(64, 4 * workers))


def run(
    source: Source, out: Path, opts: Options, on_event: Callable[[str, str], None] | None = None
) -> Summary:
    """Blocking run; the first Ctrl-C stops submitting and saves, a second one quits."""

    async def main() -> Summary:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def first_sigint() -> None:
            stop.set()
            print(
                "\nsam2fleet enqueue: stopping; finished images are saved, running jobs "
                "are left to a re-run. Ctrl-C again to quit at once.",
                file=sys.stderr,
                flush=True,
            )
            loop.remove_signal_handler(signal.SIGINT)

        installed = False
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGINT, first_sigint)
            installed = True
        try:
            return await run_async(source, out, opts, stop=stop, on_event=on_event)
        finally:
            if installed:
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(signal.SIGINT)

    return asyncio.run(main())


def format_summary(s: Summary, out: Path) -> str:
    lines = []
    if s.stopped == "interrupted":
        lines.append(
            f"interrupted: {s.in_flight_left} jobs still running on the fleet; "
            f"run the same command again to collect them and finish"
        )
    elif s.stopped:
        lines.append(f"stopped: {s.stopped}")
    lines.append(
        f"{s.total} images: {s.done} done, {s.failed} failed, {s.skipped} skipped, "
        f"{s.already_done} already done before; {s.masks} masks"
    )
    lines.append(f"{s.elapsed_s:.1f} s, {s.images_per_s:.2f} images/s")
    if s.failures:
        lines.append("failed (a re-run retries them):")
        lines += [f"  {name}: {reason}" for name, reason in s.failures[:20]]
        if len(s.failures) > 20:
            lines.append(f"  ... and {len(s.failures) - 20} more (see state.jsonl)")
    if s.skips:
        lines.append("skipped:")
        lines += [f"  {name}: {reason}" for name, reason in s.skips[:20]]
        if len(s.skips) > 20:
            lines.append(f"  ... and {len(s.skips) - 20} more")
    if s.results_path is not None:
        lines.append(f"results: {s.results_path} (COCO), per image: {out / 'jobs'}/")
    return "\n".join(lines)


# --- CLI -------------------------------------------------------------------------------------


def add_arguments(p: Any) -> None:
    p.add_argument("source", help="folder, glob (quoted), JSONL manifest, or COCO .json")
    p.add_argument(
        "--out",
        "-o",
        type=Path,
        required=True,
        help="output folder; re-running with the same folder resumes",
    )
    p.add_argument(
        "--server",
        default=None,
        help="API base URL (default SAM2FLEET_SERVER, else http://127.0.0.1:8000)",
    )
    p.add_argument("--api-key", default=None, help="API key (default SAM2FLEET_API_KEY)")
    p.add_argument(
        "--mode",
        choices=("prompt", "auto"),
        default=None,
        help="default: prompt for images with prompts, auto for those without",
    )
    p.add_argument("--model", default=None, help="model variant (default: the server's)")
    p.add_argument(
        "--concurrency",
        "-j",
        type=int,
        default=None,
        help="jobs in flight at once (default SAM2FLEET_CONCURRENCY, else 4 per "
        "warm worker, at least 4)",
    )
    p.add_argument(
        "--multimask",
        action="store_true",
        help="three candidates per prompt instead of the best one",
    )
    p.add_argument(
        "--min-score", type=float, default=0.0, help="drop masks whose predicted IoU is below this"
    )
    p.add_argument(
        "--images-dir",
        type=Path,
        default=None,
        help="where manifest/COCO file names resolve (default: next to that file)",
    )
    p.add_argument("--png-masks", action="store_true", help="also write masks/<image>/NNN.png")
    p.add_argument(
        "--overlays",
        action="store_true",
        help="also write overlays/<image>.png (masks, outlines, prompts drawn)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds to wait for one job before failing it (default 600)",
    )
    p.add_argument(
        "--no-retry-failed",
        dest="retry_failed",
        action="store_false",
        help="on a re-run, leave images that failed before alone",
    )
    p.add_argument("--limit", type=int, default=None, help="process at most N new images")
    p.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bar (the summary is still printed)",
    )
    auto = p.add_argument_group("automatic mode (SAM 2's mask generator knobs)")
    for knob in AUTO_KNOBS:
        kind = (
            int
            if knob
            in (
                "points_per_side",
                "points_per_batch",
                "crop_n_layers",
                "crop_n_points_downscale_factor",
                "min_mask_region_area",
            )
            else float
        )
        auto.add_argument(f"--{knob.replace('_', '-')}", dest=knob, type=kind, default=None)


def main(args: Any) -> int:
    try:
        source = load_source(args.source, images_dir=args.images_dir, exclude=args.out)
    except SourceError as exc:
        print(f"sam2fleet enqueue: {exc}", file=sys.stderr)
        return 2
    if not source.items:
        print(f"sam2fleet enqueue: no images in {args.source}", file=sys.stderr)
        return 2
    opts = Options(
        server=args.server,
        api_key=args.api_key,
        mode=args.mode,
        model=args.model,
        concurrency=args.concurrency,
        multimask=args.multimask,
        auto={k: getattr(args, k) for k in AUTO_KNOBS if getattr(args, k) is not None},
        min_score=args.min_score,
        png_masks=args.png_masks,
        overlays=args.overlays,
        job_timeout_s=args.timeout,
        retry_failed=args.retry_failed,
        limit=args.limit,
        images_dir=args.images_dir,
        progress=args.progress,
    )
    try:
        summary = run(source, args.out, opts)
    except httpx.HTTPError as exc:
        print(
            f"sam2fleet enqueue: cannot reach the server: {type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        return 2
    except ApiError as exc:
        print(f"sam2fleet enqueue: {exc}", file=sys.stderr)
        return 2
    print(format_summary(summary, args.out), flush=True)
    return summary.exit_code
