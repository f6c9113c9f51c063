"""The SAM 2.1 models the fleet serves: names, configs, Meta's file names and pinned
sha256, and where a worker expects each checkpoint. Torch-free: the gateway, the CLI
and the workers all read this one table.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from sam2fleet.shared.settings import Settings

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelSpec:
    name: str
    config: str  # hydra config name understood by sam2.build_sam.build_sam2
    filename: str
    bytes: int
    sha256: str


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "sam2.1_hiera_tiny",
            "configs/sam2.1/sam2.1_hiera_t.yaml",
            "sam2.1_hiera_tiny.pt",
            156008466,
            "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69",
        ),
        ModelSpec(
            "sam2.1_hiera_small",
            "configs/sam2.1/sam2.1_hiera_s.yaml",
            "sam2.1_hiera_small.pt",
            184416285,
            "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38",
        ),
        ModelSpec(
            "sam2.1_hiera_base_plus",
            "configs/sam2.1/sam2.1_hiera_b+.yaml",
            "sam2.1_hiera_base_plus.pt",
            323606802,
            "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5",
        ),
        ModelSpec(
            "sam2.1_hiera_large",
            "configs/sam2.1/sam2.1_hiera_l.yaml",
            "sam2.1_hiera_large.pt",
            898083611,
            "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318",
        ),
    )
}


def sha256_file(path: Path, chunk: int = _CHUNK) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def checkpoint_path(settings: Settings) -> Path:
    """Where the worker of `settings.model` looks for its checkpoint: the explicit
    SAM2FLEET_CHECKPOINT, else Meta's file name under the checkpoint folder."""
    if settings.checkpoint is not None:
        return settings.checkpoint
    return settings.checkpoint_dir / MODELS[settings.model].filename


def missing_checkpoint_message(settings: Settings) -> str | None:
    """None when the configured checkpoint file exists, else what to do about it."""
    if settings.model not in MODELS:
        return f"unknown model {settings.model!r}; known: {', '.join(MODELS)}"
    path = checkpoint_path(settings)
    if path.is_file():
        return None
    if settings.checkpoint is not None:
        return f"SAM2FLEET_CHECKPOINT={settings.checkpoint} does not exist"
    return (
        f"no checkpoint for {settings.model}: expected {path}. Either\n"
        f"  - download it where the network allows: sam2fleet checkpoints download "
        f"{settings.model}\n"
        f"  - or copy Meta's file there, or set SAM2FLEET_CHECKPOINT=/path/to/file.pt\n"
        f"  - or, for a demo or speed test without real weights, opt into seeded random\n"
        f"    weights (masks are meaningless): SAM2FLEET_RANDOM_WEIGHTS=1"
    )
