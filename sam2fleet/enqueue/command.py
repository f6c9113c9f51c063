"""The `sam2fleet enqueue` command: its arguments in, a run, the summary out."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

import httpx

from sam2fleet.client import ApiError
from sam2fleet.enqueue.arguments import auto_knobs
from sam2fleet.enqueue.options import Options, format_summary
from sam2fleet.enqueue.run import run
from sam2fleet.sources import SourceError, load_source


def main(args: argparse.Namespace) -> int:
    try:
        opts = options_of(args)
        source = load_source(args.source, images_dir=args.images_dir, exclude=args.out)
    except (SourceError, ValueError) as exc:
        return _refuse(str(exc))
    if not source.items:
        return _refuse(f"no images in {args.source}")
    try:
        summary = run(source, args.out, opts)
    except httpx.HTTPError as exc:
        return _refuse(f"cannot reach the server: {type(exc).__name__}: {exc}")
    except ApiError as exc:
        return _refuse(str(exc))
    print(format_summary(summary, args.out), flush=True)
    return summary.exit_code


def options_of(args: argparse.Namespace) -> Options:
    """The run's options from the command line (each option is the field of its name);
    ValueError for a bad automatic-mode knob."""
    values = {
        f.name: getattr(args, _OPTION_OF.get(f.name, f.name))
        for f in fields(Options)
        if f.name != "auto"
    }
    return Options(**values, auto=auto_knobs(args))


_OPTION_OF = {"job_timeout_s": "timeout"}  # Options fields named apart from their option


def _refuse(reason: str) -> int:
    print(f"sam2fleet enqueue: {reason}", file=sys.stderr)
    return 2
