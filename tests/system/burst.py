"""A burst of concurrent clients and a storm of odd requests against live API processes,
and how to read what they left: shared by tests/system/test_burst.py and
benchmarks/burst.py, so the test and the published figures are measured one way."""

from __future__ import annotations

import random
import string
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis

from sam2fleet.shared.images import image_id_for
from sam2fleet.shared.records import Keys
from tests.support import encode, scene
from tests.system.client import b64, submit

# Routes of the API as a client names them; `{id}` becomes a random job id.
ROUTE_PATHS = (
    "/",
    "/livez",
    "/readyz",
    "/metrics",
    "/v1/jobs",
    "/v1/jobs/{id}",
    "/v1/jobs/{id}/frames",
    "/v1/jobs/{id}/frames/stream",
    "/v1/images",
    "/v1/videos",
    "/v1/videos/{id}",
    "/v1/models",
    "/segment",
)
USUAL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# Methods outside the usual seven that fuzzers and proxies really send, plus made-up
# tokens: an HTTP server hands any token to the app.
ODD_METHODS = ("TRACE", "QUERY", "PROPFIND", "MKCOL", "LOCK", "PURGE", "SEARCH", "ZZZA")


def wait_until_ready(url: str, timeout: float = 60.0) -> None:
    """Until the API process at `url` answers /readyz with 200."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} not ready"
        time.sleep(0.2)


def hold_the_worker(r: redis.Redis, prefix: str, url: str, seconds: float) -> str:
    """Submit a job that sleeps `seconds` at the model (fault-injection seam, which the
    fleet must have on) and wait until it runs: the worker takes nothing else meanwhile.
    Returns the job's id."""
    data = encode(scene(96, 72, seed=int(time.time() * 1000) % 100_000))
    r.set(Keys(prefix).fault(image_id_for(data)), f"sleep:{seconds}")
    job = submit(url, {"image": b64(data), "prompts": [{"box": [5, 5, 60, 50]}]})
    deadline = time.monotonic() + 60
    while httpx.get(f"{url}/v1/jobs/{job['id']}").json()["status"] != "running":
        assert time.monotonic() < deadline, "the held job never started"
        time.sleep(0.05)
    return str(job["id"])


def waiting_messages(r: redis.Redis, prefix: str, model: str) -> int:
    """Messages waiting for the model's workers, read from Redis's lists in one
    transaction: the shared queue and every worker's private queue."""
    keys = Keys(prefix)
    private = [
        q
        for q in r.smembers(keys.private_queues(model))
        if q.decode().startswith(keys.private_queue_prefix(model))
    ]
    pipe = r.pipeline(transaction=True)
    for queue in [keys.queue(model).encode(), *private]:
        pipe.llen(queue)
    return sum(pipe.execute())


@dataclass
class DepthSampler:
    """Samples the queue depth in a thread for as long as the `running()` block lasts."""

    redis_url: str
    prefix: str
    model: str
    deepest: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    @contextmanager
    def running(self, min_samples: int = 0) -> Iterator[DepthSampler]:
        """Samples while the block runs and, after it, until `min_samples` were taken (at
        most 10 s more: a loaded machine may starve the thread during a short burst)."""
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            deadline = time.monotonic() + 10
            while self.samples < min_samples and time.monotonic() < deadline:
                time.sleep(0.01)
            self._stop.set()
            thread.join(timeout=10)

    def _run(self) -> None:
        r = redis.Redis.from_url(self.redis_url)
        try:
            while not self._stop.is_set():
                self.deepest = max(self.deepest, waiting_messages(r, self.prefix, self.model))
                self.samples += 1
        finally:
            r.close()


def burst(urls: list[str], body: dict[str, Any], clients: int) -> list[httpx.Response]:
    """`clients` submits of `body` released at one instant (a barrier), spread round-robin
    over the API processes at `urls`; the answers in client order."""
    answers: list[httpx.Response | None] = [None] * clients
    start = threading.Barrier(clients)

    def client(i: int) -> None:
        with httpx.Client(base_url=urls[i % len(urls)], timeout=60) as c:
            start.wait()
            answers[i] = c.post("/v1/jobs", json=body)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(a is not None for a in answers), "a client thread died"
    return [a for a in answers if a is not None]


def http_series(url: str) -> int:
    """How many `sam2fleet_http_*` series (sample lines) the API at `url` exports."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(1 for line in text.splitlines() if line.startswith("sam2fleet_http_"))


def _path(rng: random.Random, template: str) -> str:
    return template.replace("{id}", "".join(rng.choices("0123456789abcdef", k=32)))


def _odd_method(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(ODD_METHODS)
    return "".join(rng.choices(string.ascii_uppercase, k=rng.randint(3, 10)))


def _unknown_path(rng: random.Random) -> str:
    return "/" + "/".join(
        "".join(rng.choices(string.ascii_lowercase + string.digits + "-_.", k=rng.randint(1, 12)))
        for _ in range(rng.randint(1, 4))
    )


def odd_requests(url: str, count: int, seed: int = 0) -> dict[int, int]:
    """`count` requests with odd methods on the API's routes and on made-up paths, and
    usual methods on made-up paths; answers counted by status."""
    rng = random.Random(seed)
    statuses: dict[int, int] = {}
    with httpx.Client(base_url=url, timeout=30) as c:
        for i in range(count):
            kind = i % 3
            if kind == 0:
                method, path = _odd_method(rng), _path(rng, rng.choice(ROUTE_PATHS))
            elif kind == 1:
                method, path = _odd_method(rng), _unknown_path(rng)
            else:
                method, path = rng.choice(USUAL_METHODS), _unknown_path(rng)
            status = c.request(method, path).status_code
            statuses[status] = statuses.get(status, 0) + 1
    return statuses


def visit_every_label(url: str) -> None:
    """One request of each kind `odd_requests` makes, and a scrape, so the series they
    need exist."""
    rng = random.Random(-1)
    with httpx.Client(base_url=url, timeout=30) as c:
        c.get("/metrics")
        for template in ROUTE_PATHS:
            c.request("ZZZA", _path(rng, template))
        c.request("ZZZA", "/no/such/path")
        for method in USUAL_METHODS:
            c.request(method, "/no/such/path")
            # A made-up path of "." and ".." segments collapses to "/", the playground.
            c.request(method, "/")


def wait_until_empty(r: redis.Redis, prefix: str, model: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while waiting_messages(r, prefix, model):
        assert time.monotonic() < deadline, "the queue did not drain"
        time.sleep(0.1)
