"""Finding the checkpoint a worker loads, and making seeded random ones.

Real weights are Meta's files, loaded by `sam2.build_sam.build_sam2(config, path)`.
Random weights are an explicit opt-in: they are written to a file in Meta's own
format (`{"model": state_dict}`) and loaded back through that same call, so a
random-weight worker exercises exactly the production loading path.

Torch is imported only inside the functions that build or read tensors: the Celery
supervisor calls `prepare_weights` before it forks its pool, and a process that has
run torch must not fork (GNU OpenMP's thread pool is not fork-safe: the child's first
parallel operation waits forever on a lock held by a thread it does not have). So
the supervisor writes a missing random checkpoint in a short-lived subprocess
(`python -m sam2fleet.worker.weights`), and every writer takes a file lock, so two
workers starting at once write the file once and neither reads half of it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from sam2fleet.shared.errors import ModelUnavailable
from sam2fleet.shared.models import MODELS, ModelSpec
from sam2fleet.shared.settings import Settings

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolvedWeights:
    spec: ModelSpec
    path: Path
    kind: Literal["checkpoint", "random"]


def model_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ModelUnavailable(
            f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}"
        ) from None


def hydra_overrides(image_size: int | None) -> list[str]:
    return [] if image_size is None else [f"++model.image_size={image_size}"]


def build_random_state_dict(spec: ModelSpec, seed: int) -> dict[str, torch.Tensor]:
    """The real architecture with its own initialisers, seeded."""
    import torch
    from sam2.build_sam import build_sam2

    torch.manual_seed(seed)
    model = build_sam2(spec.config, None, device="cpu", mode="eval")
    state: dict[str, torch.Tensor] = model.state_dict()
    return state


# Extra key beside Meta's "model": build_sam2 ignores it, and a worker loading the
# file can tell (and stamp on every result) that its weights are random.
RANDOM_MARKER = "sam2fleet_random_seed"


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock beside `path`, held across processes until the block ends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        yield


def write_random_checkpoint(spec: ModelSpec, path: Path, seed: int) -> Path:
    """Write the seeded random checkpoint to `path` (replacing any file there)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # one per writer
    torch.save({"model": build_random_state_dict(spec, seed), RANDOM_MARKER: seed}, tmp)
    tmp.replace(path)  # atomic: a concurrent reader never loads half a file
    return path


def ensure_random_checkpoint(spec: ModelSpec, path: Path, seed: int) -> bool:
    """Write the random checkpoint unless it exists; True when this call wrote it.

    Under a file lock: of several workers starting at once one writes, the others
    wait for it and then find the file."""
    if path.is_file():
        return False
    with _file_lock(path):
        if path.is_file():  # written by another process while this one waited
            return False
        log.info("writing random %s checkpoint (seed %d) to %s", spec.name, seed, path)
        write_random_checkpoint(spec, path, seed)
        return True


def weights_kind(path: Path) -> Literal["checkpoint", "random"]:
    import torch

    # mmap: reads the keys without pulling hundreds of MB of tensors into memory.
    payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return "random" if isinstance(payload, dict) and RANDOM_MARKER in payload else "checkpoint"


def random_checkpoint_path(settings: Settings, spec: ModelSpec) -> Path:
    return settings.checkpoint_dir / "random" / f"{spec.name}-seed{settings.random_seed}.pt"


def _locate(settings: Settings) -> tuple[ModelSpec, Path, bool]:
    """(spec, checkpoint file, whether it is the random one), without reading it."""
    spec = model_spec(settings.model)
    if settings.checkpoint is not None:
        if not settings.checkpoint.is_file():
            raise ModelUnavailable(f"SAM2FLEET_CHECKPOINT={settings.checkpoint} does not exist")
        return spec, settings.checkpoint, False
    official = settings.checkpoint_dir / spec.filename
    if official.is_file():
        return spec, official, False
    if settings.random_weights:
        return spec, random_checkpoint_path(settings, spec), True
    raise ModelUnavailable(
        f"no checkpoint for {spec.name}: expected {official}. Get it with "
        f"`sam2fleet checkpoints download {spec.name}`, or point SAM2FLEET_CHECKPOINT at a "
        "checkpoint file, or opt into random weights (speed tests only) with "
        "SAM2FLEET_RANDOM_WEIGHTS=1."
    )


def resolve_weights(settings: Settings) -> ResolvedWeights:
    """Pick the checkpoint file, or refuse with a message that says how to get one."""
    spec, path, random = _locate(settings)
    if random:
        ensure_random_checkpoint(spec, path, settings.random_seed)
        return ResolvedWeights(spec, path, "random")
    return ResolvedWeights(spec, path, weights_kind(path))


def prepare_weights(settings: Settings) -> Path:
    """What a process that will fork calls: the checkpoint file a worker will load,
    made first when it is the random one and missing, without running torch here."""
    spec, path, random = _locate(settings)
    if random and not path.is_file():
        command = [sys.executable, "-m", __name__, spec.name, str(settings.random_seed), str(path)]
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        sys.stderr.write(done.stderr)  # its log lines, whatever happened
        if done.returncode != 0 or not path.is_file():
            raise ModelUnavailable(
                f"could not write the random checkpoint {path} (exit {done.returncode})"
            )
    return path


def _main(argv: list[str]) -> int:
    """`python -m sam2fleet.worker.weights MODEL SEED PATH`: ensure a random checkpoint."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    name, seed, path = argv
    ensure_random_checkpoint(model_spec(name), Path(path), int(seed))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
