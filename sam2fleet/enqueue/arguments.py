"""The options of `sam2fleet enqueue`.

`sam2fleet.cli` adds these to its parser for every command, so this module imports
nothing but argparse and the request schema (no client, numpy or Pillow). The
automatic mode's options are read from `AutoParams`: a knob added to the schema is
an option here with no edit.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sam2fleet.shared.schemas import AutoParams


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="folder, glob (quoted), JSONL manifest, or COCO .json")
    p.add_argument(
        "--out",
        "-o",
        type=Path,
        required=True,
        help="output folder; re-running with the same folder resumes",
    )
    p.add_argument(
        "--server",
        default=None,
        help="API base URL (default SAM2FLEET_SERVER, else http://127.0.0.1:8000)",
    )
    p.add_argument("--api-key", default=None, help="API key (default SAM2FLEET_API_KEY)")
    p.add_argument(
        "--mode",
        choices=("prompt", "auto"),
        default=None,
        help="default: prompt for images with prompts, auto for those without",
    )
    p.add_argument("--model", default=None, help="model variant (default: the server's)")
    p.add_argument(
        "--concurrency",
        "-j",
        type=int,
        default=None,
        help="jobs in flight at once (default SAM2FLEET_CONCURRENCY, else 4 per "
        "warm worker, at least 4)",
    )
    p.add_argument(
        "--multimask",
        action="store_true",
        help="three candidates per prompt instead of the best one",
    )
    p.add_argument(
        "--min-score", type=float, default=0.0, help="drop masks whose predicted IoU is below this"
    )
    p.add_argument(
        "--images-dir",
        type=Path,
        default=None,
        help="where manifest/COCO file names resolve (default: next to that file)",
    )
    p.add_argument("--png-masks", action="store_true", help="also write masks/<image>/NNN.png")
    p.add_argument(
        "--overlays",
        action="store_true",
        help="also write overlays/<image>.png (masks, outlines, prompts drawn)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds to wait for one job before failing it (default 600)",
    )
    p.add_argument(
        "--no-retry-failed",
        dest="retry_failed",
        action="store_false",
        help="on a re-run, leave images that failed before alone",
    )
    p.add_argument("--limit", type=int, default=None, help="process at most N new images")
    p.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bar (the summary is still printed)",
    )
    _add_auto_knobs(p.add_argument_group("automatic mode (SAM 2's mask generator knobs)"))


def _add_auto_knobs(group: argparse._ArgumentGroup) -> None:
    bounds = AutoParams.model_json_schema()["properties"]
    for name, info in AutoParams.model_fields.items():
        low, high = bounds[name].get("minimum"), bounds[name].get("maximum")
        limits = f", {low} to {high}" if low is not None and high is not None else ""
        group.add_argument(
            option(name),
            dest=name,
            type=_PARSERS[info.annotation],
            default=None,
            metavar=_METAVARS[info.annotation],
            help=f"{info.description or ''} (server default {info.default}{limits})".lstrip(),
        )


def option(knob: str) -> str:
    """The command-line option of an `AutoParams` field."""
    return "--" + knob.replace("_", "-")


def _yes_no(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a yes/no value: {text!r}")


# How a knob's type is read from the command line (a knob of another type fails loudly
# when the parser is built, so the test of this module names it).
_PARSERS: dict[Any, Any] = {int: int, float: float, str: str, bool: _yes_no}
_METAVARS: dict[Any, str] = {int: "N", float: "X", str: "S", bool: "yes|no"}


def auto_knobs(args: argparse.Namespace) -> dict[str, Any]:
    """The knobs given on the command line, checked by the server's own rules.

    Raises ValueError naming the option, before any image is sent: a bad knob would
    otherwise fail every image of the run with the same 422."""
    given = {
        name: getattr(args, name)
        for name in AutoParams.model_fields
        if getattr(args, name, None) is not None
    }
    try:
        AutoParams.model_validate(given)
    except ValidationError as exc:
        problems = [f"{option(str(e['loc'][0]))}: {e['msg']}" for e in exc.errors()]
        raise ValueError("; ".join(problems)) from None
    return given
