"""`sam2fleet enqueue`'s options: the automatic mode's come from `AutoParams`, and the
module that defines them stays light (the CLI builds them for every command)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from sam2fleet.cli import main as cli
from sam2fleet.enqueue.arguments import add_arguments, auto_knobs, option
from sam2fleet.enqueue.command import options_of
from sam2fleet.shared.schemas import AutoParams


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["photos/", "--out", "out", *argv])


def test_every_generator_knob_is_an_option_that_reaches_the_job_spec() -> None:
    # A value off the server's default for every knob, written as a user types it.
    given = {
        name: (info.default + 1 if info.annotation is int else info.default / 2)
        for name, info in AutoParams.model_fields.items()
    }
    argv = [s for name, value in given.items() for s in (option(name), str(value))]
    opts = options_of(_parse(*argv))
    assert opts.auto == given
    assert all(type(opts.auto[k]) is AutoParams.model_fields[k].annotation for k in given)
    assert options_of(_parse()).auto == {}  # none given: the server's defaults apply


def test_a_knob_outside_the_schema_bounds_is_refused_before_any_image_is_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match="--points-per-side: .*less than or equal to 128"):
        auto_knobs(_parse("--points-per-side", "500"))
    # Through the command: exit 2 with the option's name; the server is never asked.
    code = cli(
        ["enqueue", str(tmp_path), "--out", str(tmp_path / "o"), "--server", "http://0.0.0.0:9"]
        + ["--pred-iou-thresh", "1.5"]
    )
    assert code == 2
    assert "--pred-iou-thresh" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_the_parser_module_imports_neither_the_client_nor_numpy_nor_pillow() -> None:
    code = (
        "import sys\n"
        "from sam2fleet.cli import build_parser\n"
        "build_parser().parse_args(['overlay', 'x.json'])\n"
        "heavy = ('httpx', 'numpy', 'PIL', 'tqdm', 'sam2fleet.client', 'sam2fleet.enqueue.run')\n"
        "print(' '.join(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
