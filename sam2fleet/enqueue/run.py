"""One run of `sam2fleet enqueue`: every planned image to done or failed, with at most
`concurrency` jobs in flight, stopping cleanly when asked to."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TextIO, TypeVar

import httpx

from sam2fleet.client import ApiError, AsyncClient, Job, RetryPolicy, WaitTimeout
from sam2fleet.enqueue.journal import Journal
from sam2fleet.enqueue.options import CONCURRENCY_ENV, Options, Summary
from sam2fleet.enqueue.outputs import write_coco, write_outputs, write_run_file
from sam2fleet.enqueue.plan import Plan, Planned, idempotency_key, make_plan, read_image
from sam2fleet.enqueue.progress import Progress
from sam2fleet.sources import Source

T = TypeVar("T")
OnEvent = Callable[[str, str], None]  # on_event("done" | "failed", item key)


class Stopped(Exception):
    """The run was asked to stop before this image ended; a re-run takes it up."""


class Fatal(Exception):
    """Nothing more can succeed in this run (the server is gone, the key refused)."""


class EnqueueRun:
    """The state of one run, and its steps: plan, then workers that each take the next
    image: collect or submit its job, wait for it, record the outcome."""

    def __init__(
        self,
        source: Source,
        out: Path,
        opts: Options,
        stop: asyncio.Event,
        on_event: OnEvent | None,
        stream: TextIO,
    ) -> None:
        self.source, self.out, self.opts = source, out, opts
        self.stop, self.on_event, self.stream = stop, on_event, stream
        self.summary = Summary(total=len(source.items))
        for key, reason in source.skipped:
            self.summary.skip(key, reason)
        self.fatal = ""  # why the run cannot go on, once it cannot
        # More patient than the default policy: a long batch rides out a short outage.
        self.client = AsyncClient(
            opts.server,
            opts.api_key,
            timeout=60.0,
            retry=RetryPolicy(max_retries=8, backoff_s=0.5, max_backoff_s=20.0),
        )
        self.journal: Journal
        self.plan: Plan
        self.progress: Progress

    async def execute(self) -> Summary:
        started = time.monotonic()
        (self.out / "jobs").mkdir(parents=True, exist_ok=True)
        write_run_file(self.out, self.source, self.opts)
        self.journal = Journal(self.out / "state.jsonl")
        try:
            # Hashing every file decides what is already done; in a thread, it is I/O.
            self.plan = await asyncio.to_thread(
                make_plan, self.source, self.opts, self.journal, self.summary
            )
            try:
                await self._work_through_plan()
            finally:
                # Every run, interrupted or not, leaves the COCO files of all done so far.
                self.summary.results_path = await asyncio.to_thread(
                    write_coco, self.out, self.source, self.journal, self.plan.bases
                )
        finally:
            await self.client.aclose()
            self.journal.close()
            self.summary.elapsed_s = time.monotonic() - started
        return self.summary

    async def _work_through_plan(self) -> None:
        concurrency = await self._concurrency()
        self.progress = Progress(len(self.plan.todo), self.opts.progress, self.stream)
        try:
            await asyncio.gather(*(self._worker() for _ in range(concurrency)))
        finally:
            self.progress.close()
        self.summary.stopped = self.fatal or ("interrupted" if self.stop.is_set() else "")
        self.summary.in_flight_left = self.summary.interrupted

    async def _concurrency(self) -> int:
        """Enough jobs in flight to keep every worker busy while results travel back
        (about four per warm worker), without flooding the queue."""
        given = self.opts.concurrency or int(os.environ.get(CONCURRENCY_ENV) or 0)
        if given:
            return max(1, given)
        model = self.opts.model
        models = await self.client.models()
        chosen = [m for m in models if (m["name"] == model if model else m.get("default"))]
        workers = sum(int(m.get("workers", 0)) for m in chosen)
        return max(4, min(64, 4 * workers))

    async def _worker(self) -> None:
        while self.plan.todo and not self.stop.is_set():
            planned = self.plan.todo.popleft()
            self.progress.in_flight += 1
            try:
                await self._take(planned)
            except Stopped:
                continue
            except Fatal as exc:
                self.fatal = self.fatal or str(exc)
                self.stop.set()
                continue
            finally:
                self.progress.in_flight -= 1
            self.progress.update()

    async def _take(self, planned: Planned) -> None:
        """Take one image to done or failed: every error that concerns this image alone
        is recorded as its failure."""
        job_id = None
        try:
            job = await self._collect(planned) or await self._submit(planned)
            job_id = job.id
            await self._record(planned, await self._until_done(job))
        except ApiError as exc:
            if exc.status in (401, 403):
                raise Fatal(
                    f"the server refused the API key ({exc.status} {exc.type}: {exc.message})"
                ) from exc
            self._failed(planned, job_id, exc.type, exc.message)
        except WaitTimeout as exc:
            with contextlib.suppress(ApiError, httpx.HTTPError):
                await self.client.cancel(exc.job.id)
            limit = f"not finished after {self.opts.job_timeout_s:g} s; cancelled"
            self._failed(planned, exc.job.id, "timeout", limit)
        except httpx.HTTPError as exc:
            raise Fatal(f"cannot reach {self.client.server}: {type(exc).__name__}: {exc}") from exc
        except (OSError, ValueError, RuntimeError) as exc:
            self._failed(planned, job_id, "client", f"{type(exc).__name__}: {exc}")

    async def _collect(self, planned: Planned) -> Job | None:
        """The job a run submitted before it was interrupted, if the fleet still has it."""
        pending = self.journal.state(planned.item.key, planned.base).pending
        if pending is None:
            return None
        try:
            return await self.client.get(pending)
        except ApiError as exc:
            if exc.status != 404:
                raise
            return None  # expired: submit again

    async def _submit(self, planned: Planned) -> Job:
        if self.stop.is_set():
            raise Stopped
        attempt = self.journal.state(planned.item.key, planned.base).failed
        key = idempotency_key(planned.base, attempt)
        original, payload = await asyncio.to_thread(read_image, planned.item.path)
        if hashlib.sha256(original).hexdigest() != planned.sha256:
            raise RuntimeError("file changed while the run was going on")
        body = {**planned.spec, "image": base64.b64encode(payload).decode()}
        # Not raced against `stop`: a submit in progress completes and is journaled,
        # so an interrupted run never leaves an unrecorded job behind.
        job = await self.client.submit_body(body, idempotency_key=key)
        self.journal.append(
            event="submitted",
            key=planned.item.key,
            base=planned.base,
            job_id=job.id,
            idempotency_key=key,
        )
        return job

    async def _until_done(self, job: Job) -> Job:
        if job.done:
            return job
        wait = self.client.wait(job.id, timeout=self.opts.job_timeout_s)
        ended = await _unless_stopped(wait, self.stop)
        if ended is None:
            self.summary.interrupted += 1
            raise Stopped
        return ended

    async def _record(self, planned: Planned, job: Job) -> None:
        if not job.succeeded:  # failed or cancelled: recorded; the next run retries it
            error = job.error
            message = error.message if error else f"job {job.status}"
            self._failed(planned, job.id, error.type if error else job.status, message)
            return
        record = await asyncio.to_thread(write_outputs, self.out, planned, job, self.opts)
        masks = len(record["job"]["result"]["masks"])
        self.journal.append(
            event="done", key=planned.item.key, base=planned.base, job_id=job.id, masks=masks
        )
        self.summary.done += 1
        self.summary.masks += masks
        if self.on_event:
            self.on_event("done", planned.item.key)

    def _failed(self, planned: Planned, job_id: str | None, type_: str, message: str) -> None:
        self.journal.append(
            event="failed",
            key=planned.item.key,
            base=planned.base,
            job_id=job_id,
            error={"type": type_, "message": message},
        )
        self.summary.fail(planned.item.key, f"{type_}: {message}")
        self.progress.failed += 1
        if self.on_event:
            self.on_event("failed", planned.item.key)


async def _unless_stopped(aw: Awaitable[T], stop: asyncio.Event) -> T | None:
    """The awaitable's value, or None (and the awaitable cancelled) once `stop` is set."""
    task = asyncio.ensure_future(aw)
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
    on_event: OnEvent | None = None,
    stream: TextIO | None = None,
) -> Summary:
    run = EnqueueRun(source, out, opts, stop or asyncio.Event(), on_event, stream or sys.stderr)
    return await run.execute()


def run(source: Source, out: Path, opts: Options, on_event: OnEvent | None = None) -> Summary:
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
