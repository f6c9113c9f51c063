"""Finding the checkpoint a worker loads, and making seeded random ones.

Real weights are Meta's files, loaded by `sam2.build_sam.build_sam2(config, path)`.
Random weights are an explicit opt-in: they are written to a file in Meta's own
format (`{"model": state_dict}`) and loaded back through that same call, so a
random-weight worker exercises exactly the production loading path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from sam2fleet.shared.errors import ModelUnavailable
from sam2fleet.shared.models import MODELS, ModelSpec
from sam2fleet.shared.settings import Settings


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
    from sam2.build_sam import build_sam2

    torch.manual_seed(seed)
    model = build_sam2(spec.config, None, device="cpu", mode="eval")
    state: dict[str, torch.Tensor] = model.state_dict()
    return state


# Extra key beside Meta's "model": build_sam2 ignores it, and a worker loading the
# file can tell (and stamp on every result) that its weights are random.
RANDOM_MARKER = "sam2fleet_random_seed"


def write_random_checkpoint(spec: ModelSpec, path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"model": build_random_state_dict(spec, seed), RANDOM_MARKER: seed}, tmp)
    tmp.replace(path)  # atomic: a concurrent worker never loads half a file
    return path


def weights_kind(path: Path) -> Literal["checkpoint", "random"]:
    # mmap: reads the keys without pulling hundreds of MB of tensors into memory.
    payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return "random" if isinstance(payload, dict) and RANDOM_MARKER in payload else "checkpoint"


def resolve_weights(settings: Settings) -> ResolvedWeights:
    """Pick the checkpoint file, or refuse with a message that says how to get one."""
    spec = model_spec(settings.model)
    if settings.checkpoint is not None:
        if not settings.checkpoint.is_file():
            raise ModelUnavailable(f"SAM2FLEET_CHECKPOINT={settings.checkpoint} does not exist")
        return ResolvedWeights(spec, settings.checkpoint, weights_kind(settings.checkpoint))
    official = settings.checkpoint_dir / spec.filename
    if official.is_file():
        return ResolvedWeights(spec, official, weights_kind(official))
    if settings.random_weights:
        path = settings.checkpoint_dir / "random" / f"{spec.name}-seed{settings.random_seed}.pt"
        if not path.is_file():
            write_random_checkpoint(spec, path, settings.random_seed)
        return ResolvedWeights(spec, path, "random")
    raise ModelUnavailable(
        f"no checkpoint for {spec.name}: expected {official}. Get it with "
        f"`sam2fleet checkpoints download {spec.name}`, or point SAM2FLEET_CHECKPOINT at a "
        "checkpoint file, or opt into random weights (speed tests only) with "
        "SAM2FLEET_RANDOM_WEIGHTS=1."
    )
