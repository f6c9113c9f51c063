"""The install layout: the owner's folders install inside the `sam2fleet` namespace."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _folder_of(package: str) -> Path:
    """The folder a package installs from, by the longest package-dir prefix."""
    mapping: dict[str, str] = SETUPTOOLS["package-dir"]
    parts = package.split(".")
    for cut in range(len(parts), 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in mapping:
            return ROOT / mapping[prefix] / Path(*parts[cut:])
    return ROOT / Path(*parts)


def test_every_package_folder_is_listed_and_every_listed_one_exists() -> None:
    listed = set(SETUPTOOLS["packages"])
    for package in listed:
        assert (_folder_of(package) / "__init__.py").is_file(), f"{package}: no folder"
    found = set()
    for top, folder in SETUPTOOLS["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([top, *rel.parts]))
    assert found == listed, f"unlisted: {sorted(found - listed)}; stale: {sorted(listed - found)}"


def test_no_module_imports_the_bare_folder_names() -> None:
    """`import api` would work from the repository root and nowhere else."""
    bare = re.compile(r"^\s*(from|import) (api|worker|shared)\b", re.M)
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("api", "worker", "shared", "sam2fleet", "tests", "benchmarks", "deploy")
        for path in (ROOT / folder).rglob("*.py")
        if bare.search(path.read_text())
    ]
    assert not offenders, f"import sam2fleet.api / .worker / .shared instead: {offenders}"
