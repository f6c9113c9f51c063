"""The names deployment files use, checked against the code that reads them: the
`sam2fleet` subcommands and their options, the `SAM2FLEET_*` settings, the API's
routes. Compose and Kubernetes tests share these, so a rename in the code fails
wherever a deployment still uses the old name.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shlex
from collections.abc import Mapping

from sam2fleet.cli import build_parser
from sam2fleet.shared.settings import Settings

PREFIX: str = Settings.model_config["env_prefix"]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def subcommands() -> set[str]:
    """The top-level `sam2fleet` subcommands."""
    return set(_subparsers(build_parser()))


def parse_command(argv: list[str]) -> argparse.Namespace:
    """What `sam2fleet <argv>` parses to, without running it. Fails when the CLI would
    refuse the command line, and when an option is not spelled out in full (argparse
    takes a prefix, which a later option of the same prefix would break)."""
    parser = build_parser()
    assert argv and argv[0] in _subparsers(parser), (
        f"`sam2fleet {shlex.join(argv)}`: no such subcommand; known: {sorted(subcommands())}"
    )
    deepest = parser  # the parser of the last subcommand named: it owns the options
    for word in argv:
        deepest = _subparsers(deepest).get(word, deepest)
    for word in argv:
        option = word.split("=", 1)[0]
        if option.startswith("--"):
            assert option in deepest._option_string_actions, (
                f"{option} is not an option of `{deepest.prog}`"
            )
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            return parser.parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(
            f"`sam2fleet {shlex.join(argv)}` is refused (exit {exc.code}): {errors.getvalue()}"
        ) from None


def check_settings(env: Mapping[str, str], where: str) -> Settings:
    """The settings an environment gives: each `SAM2FLEET_*` name must be a setting, its
    value valid alone and all of them together (cross-field checks)."""
    fields = {}
    for key, value in env.items():
        if not key.startswith(PREFIX):
            continue
        name = key[len(PREFIX) :].lower()
        assert name in Settings.model_fields, f"{where}: {key} is not a setting"
        Settings(**{name: value})  # raises ValidationError on a bad value
        fields[name] = value
    return Settings(**fields)


def api_paths() -> set[str]:
    """The API's route paths, as its OpenAPI document lists them."""
    from sam2fleet.api.main import create_app

    return set(create_app(Settings()).openapi()["paths"])
