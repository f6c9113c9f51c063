"""Running `sam2fleet up` from a test: its output read line by line as it comes."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sam2fleet.launcher.redis_server import free_port


class Output:
    """Collects a process's lines in a thread so the test can wait for one."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.stopped_s = 0.0  # SIGINT to exit, once it has stopped
        self._proc = proc
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 120.0, after: int = 0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines[after:]:
                if m := re.search(pattern, line):
                    return m
            if self._proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"no line matching {pattern!r}:\n" + "\n".join(self.lines[-60:]))


@contextmanager
def sam2fleet_up(env: dict[str, str], cwd: Path, *args: str) -> Iterator[tuple[Output, str]]:
    """`sam2fleet up` running; on the way out, SIGINT and the time it took to exit."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sam2fleet.cli", "up", "--port", str(port), *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = Output(proc)
    try:
        yield out, f"http://127.0.0.1:{port}"
    finally:
        asked = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        finally:
            proc.kill()
            assert proc.stdout is not None
            proc.stdout.close()
        out.stopped_s = time.monotonic() - asked
        assert code == 0, "\n".join(out.lines[-40:])
