"""What the benchmarks share: a local fleet on its own Redis, and the in-process baseline.

Every benchmark writes a random-weight checkpoint of the real tiny architecture
(speed does not depend on weight values) and measures the fleet and the direct
call side by side in one run.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sam2fleet.shared.models import MODELS  # noqa: E402
from sam2fleet.shared.settings import Settings  # noqa: E402
from sam2fleet.worker.model import feature_sizes, resolve_device  # noqa: E402
from sam2fleet.worker.weights import write_random_checkpoint  # noqa: E402
from tests.support import Fleet, RedisServer, fleet_env  # noqa: E402

TINY = MODELS["sam2.1_hiera_tiny"]
# The device both sides run on: the device setting (SAM2FLEET_DEVICE, e.g. `cuda`;
# `auto` by default, as a worker resolves it), given to the fleet's workers as well.
DEVICE = str(resolve_device(Settings().device))


@contextmanager
def local_fleet(
    prefix: str, image_size: int | None, workers: int = 1, **env: str
) -> Iterator[tuple[Fleet, Path, RedisServer]]:
    """Redis, `workers` workers and the API on this machine; yields (fleet, checkpoint)."""
    work = Path(tempfile.mkdtemp(prefix=f"sam2fleet-{prefix}-"))
    checkpoint = write_random_checkpoint(TINY, work / "tiny.pt", 0)
    redis = RedisServer.start(work / "redis")
    (work / "logs").mkdir()
    env = {"SAM2FLEET_DEVICE": DEVICE, **env}
    fleet = Fleet(fleet_env(redis.url, checkpoint, prefix, image_size, **env), work / "logs")
    for i in range(workers):
        fleet.start_worker(f"w{i}")
    fleet.start_api()
    try:
        fleet.wait_ready(timeout=300)
        yield fleet, checkpoint, redis
    finally:
        fleet.stop()
        redis.stop()


def direct_predictor(checkpoint: Path, image_size: int | None) -> Any:
    """Meta's SAM2ImagePredictor on the same checkpoint, in this process."""
    from sam2.build_sam import build_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    overrides = [] if image_size is None else [f"++model.image_size={image_size}"]
    model = build_sam2(TINY.config, str(checkpoint), device=DEVICE, hydra_overrides_extra=overrides)
    predictor = SAM2ImagePredictor(model)
    predictor._bb_feat_sizes = feature_sizes(model.image_size)
    return predictor
