"""The progress bar on stderr: images done, rate, ETA, failures, jobs in flight."""

from __future__ import annotations

from typing import Any, TextIO

from tqdm import tqdm


class Progress:
    def __init__(self, total: int, enabled: bool, stream: TextIO) -> None:
        self.bar: tqdm[Any] | None = None
        if enabled:
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

    def _postfix(self, refresh: bool) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(
                f"failed={self.failed} in flight={self.in_flight}", refresh=refresh
            )

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self._postfix(refresh=False)
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self._postfix(refresh=True)
            self.bar.close()
