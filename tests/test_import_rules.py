"""The import rules of docs/architecture.md ("Layout"), checked in fresh interpreters:
what each side loads when it starts, and what the contracts package may import."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _loaded_after(code: str) -> set[str]:
    """Top-level and sam2fleet.* module names loaded by a fresh interpreter running `code`."""
    probe = (
        f"{code}\nimport sys, json\n"
        "print(json.dumps(sorted({m if m.startswith('sam2fleet') else m.split('.')[0] "
        "for m in sys.modules})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_the_gateway_never_loads_torch_or_the_worker() -> None:
    loaded = _loaded_after("import sam2fleet.api.main")
    assert "fastapi" in loaded  # the probe itself works
    assert not {"torch", "sam2"} & loaded
    assert not {m for m in loaded if m.startswith("sam2fleet.worker")}


def test_the_worker_never_loads_fastapi_or_the_gateway() -> None:
    # The Celery app, and what its pool process loads (the supervisor loads no torch:
    # tests/worker/test_fork_safety.py).
    loaded = _loaded_after(
        "import sam2fleet.worker.celery_app, sam2fleet.worker.runtime, sam2fleet.worker.video_jobs"
    )
    assert "torch" in loaded
    assert not {"fastapi", "starlette", "uvicorn"} & loaded
    assert not {m for m in loaded if m.startswith("sam2fleet.api")}


@pytest.mark.parametrize("side", ["sam2fleet.api.main", "sam2fleet.worker.celery_app"])
def test_server_processes_never_load_the_client(side: str) -> None:
    loaded = _loaded_after(f"import {side}")
    client = {"sam2fleet.client", "sam2fleet.enqueue", "sam2fleet.overlay"}
    assert not {m for m in loaded if any(m == c or m.startswith(c + ".") for c in client)}


def test_shared_imports_neither_side_nor_the_client() -> None:
    allowed = "sam2fleet.shared"
    offenders = []
    for path in (ROOT / "shared").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                if name.startswith("sam2fleet") and not name.startswith(allowed):
                    offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert not offenders, offenders
