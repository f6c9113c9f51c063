"""state.jsonl: what happened to each image, the record a re-run resumes from."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple, TextIO


class ItemState(NamedTuple):
    """What the journal knows of one image with one spec."""

    done: dict[str, Any] | None  # its `done` event
    pending: str | None  # the id of a job submitted and not yet collected
    failed: int  # failed attempts so far


class Journal:
    """Append-only JSONL; one line per event, flushed at once (a crash loses no line
    that was written; a torn last line is ignored when read back)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._events: dict[tuple[str, str], list[dict[str, Any]]] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a crash mid-write
                if isinstance(event, dict) and "event" in event:
                    self._remember(event)
        self._fh: TextIO = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def _remember(self, event: dict[str, Any]) -> None:
        item = (str(event.get("key")), str(event.get("base")))
        self._events.setdefault(item, []).append(event)

    def append(self, **event: Any) -> None:
        event["t"] = round(time.time(), 3)
        with self._lock:
            self._fh.write(json.dumps(event) + "\n")
            self._fh.flush()
            self._remember(event)

    def close(self) -> None:
        self._fh.close()

    def state(self, key: str, base: str) -> ItemState:
        """The state of the image `key` whose content and spec hash to `base`."""
        done, pending, failed = None, None, 0
        for e in self._events.get((key, base), []):
            if e["event"] == "done":
                done, pending = e, None
            elif e["event"] == "failed":
                failed += 1
                pending = None
            elif e["event"] == "submitted":
                pending = e["job_id"]
        return ItemState(done, pending, failed)
