"""The README documents every setting the code reads."""

from __future__ import annotations

from sam2fleet.shared.settings import Settings
from tests.support import ROOT


def test_readme_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [
        f"SAM2FLEET_{name.upper()}"
        for name in Settings.model_fields
        if f"`SAM2FLEET_{name.upper()}`" not in readme
    ]
    assert missing == []


def test_readme_quick_start_is_the_two_make_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
