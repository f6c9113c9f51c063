"""The base install is the client: `pip install sam2fleet` without extras, into a fresh
virtualenv, gives the client and its tools and none of the server's packages.

This really installs: pip builds the wheel from a clean copy of the sources and fetches
the dependencies (from its cache when it can). The fresh environment gets no pip of
its own (`venv --without-pip` is instant); this environment's pip installs into it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import ROOT

SERVER_MODULES = ("torch", "celery", "fastapi", "redis", "uvicorn", "pydantic_settings", "sam2")


@dataclass(frozen=True)
class Install:
    python: Path
    sam2fleet: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.sam2fleet), *args], capture_output=True, text=True, timeout=60
        )


def _sources(into: Path) -> Path:
    """What the wheel is built from: pyproject.toml, the README and the package folders."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    into.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, into / name)
    for folder in set(pyproject["tool"]["setuptools"]["package-dir"].values()):
        shutil.copytree(ROOT / folder, into / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return into


@pytest.fixture(scope="module")
def client_install(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Install]:
    root = tmp_path_factory.mktemp("client-install")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install"]
    done = subprocess.run(
        [*pip, "--quiet", str(_sources(root / "src"))], capture_output=True, text=True
    )
    assert done.returncode == 0, f"pip install failed:\n{done.stdout}\n{done.stderr}"
    yield Install(venv / "bin" / "python", venv / "bin" / "sam2fleet")


def test_the_base_install_has_none_of_the_server_packages(client_install: Install) -> None:
    code = (
        "import importlib.util as u; "
        f"print(' '.join(m for m in {SERVER_MODULES!r} if u.find_spec(m) is not None))"
    )
    found = subprocess.run(
        [str(client_install.python), "-c", code], capture_output=True, text=True, check=True
    )
    assert found.stdout.strip() == ""


def test_the_client_imports_and_works_offline(client_install: Install) -> None:
    code = (
        "import httpx, sam2fleet\n"
        "from sam2fleet import ApiError, AsyncClient, Client, Job, JobFailed, Mask, Result\n"
        "answer = httpx.Response(200, json=[{'name': 'm', 'default': True}])\n"
        "fleet = httpx.MockTransport(lambda request: answer)\n"
        "c = sam2fleet.Client('http://fleet.test', transport=fleet)\n"
        "print(c.models()[0]['name'], sam2fleet.Client is Client)\n"
    )
    done = subprocess.run(
        [str(client_install.python), "-c", code], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["m", "True"]


@pytest.mark.parametrize(
    ("command", "shows"),
    [("enqueue", "--points-per-side"), ("overlay", "--all-candidates")],
)
def test_the_client_tools_run(client_install: Install, command: str, shows: str) -> None:
    done = client_install.run(command, "--help")
    assert done.returncode == 0, done.stderr
    assert shows in done.stdout


@pytest.mark.parametrize(
    ("command", "extras"),
    [(["up"], "server"), (["worker"], "server,model"), (["api"], "server")],
)
def test_server_commands_say_which_extra_to_install(
    client_install: Install, command: list[str], extras: str
) -> None:
    done = client_install.run(*command)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr  # one clear line, no traceback
    assert lines[0].startswith(f"sam2fleet {command[0]}: needs the `server`")
    assert lines[0].endswith(f"pip install 'sam2fleet[{extras}]'")
