"""What a run is asked to do (`Options`) and what it did (`Summary`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CONCURRENCY_ENV = "SAM2FLEET_CONCURRENCY"


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

    def public(self) -> dict[str, Any]:
        """The options as written to run.json: JSON values, and never the API key."""
        return {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in asdict(self).items()
            if k != "api_key"
        }


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

    def skip(self, key: str, reason: str) -> None:
        self.skipped += 1
        self.skips.append((key, reason))

    def fail(self, key: str, reason: str) -> None:
        self.failed += 1
        self.failures.append((key, reason))


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
    lines += _listing("failed (a re-run retries them):", s.failures, "(see state.jsonl)")
    lines += _listing("skipped:", s.skips, "")
    if s.results_path is not None:
        lines.append(f"results: {s.results_path} (COCO), per image: {out / 'jobs'}/")
    return "\n".join(lines)


def _listing(title: str, rows: list[tuple[str, str]], where: str, most: int = 20) -> list[str]:
    if not rows:
        return []
    lines = [title] + [f"  {name}: {reason}" for name, reason in rows[:most]]
    if len(rows) > most:
        lines.append(f"  ... and {len(rows) - most} more {where}".rstrip())
    return lines
