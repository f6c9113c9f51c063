"""The `sam2fleet` command: the fleet's processes, its administration, and the client
tools, in one parser.

Every subcommand imports what it runs only when it runs: the client tools
(`enqueue`, `overlay`) work on a client-only install without torch, Celery or the
server packages (there the server commands stop with one line naming the extra to
install), and the server commands never load the client.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

SERVER_EXTRA = ("server",)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except ModuleNotFoundError as exc:
        # On a client-only install the server's packages are absent: one line that
        # says what to install instead of a traceback from deep inside an import.
        extras: tuple[str, ...] = args.extras
        missing = (exc.name or "").split(".")[0]
        if not extras or missing in ("", "sam2fleet"):
            raise  # no extra brings it: a broken install, or a bug
        print(missing_extras(args.command, extras, exc.name), file=sys.stderr)
        return 2
    return code


def missing_extras(command: str, extras: tuple[str, ...], module: str | None) -> str:
    names = " and ".join(f"`{e}`" for e in extras)
    return (
        f"sam2fleet {command}: needs the {names} extra{'s' if len(extras) > 1 else ''}, "
        f"not installed here (no module named {module!r}): "
        f"pip install 'sam2fleet[{','.join(extras)}]'"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sam2fleet", description=__doc__)
    # Each subcommand sets `handler`, the function that runs it (not `run`: overlay has
    # a --run option), and `extras`, what it needs beyond the client-only install.
    parser.set_defaults(extras=())
    sub = parser.add_subparsers(dest="command", required=True)
    _add_up(sub)
    _add_worker(sub)
    _add_worker_ready(sub)
    _add_api(sub)
    _add_checkpoints(sub)
    _add_keys(sub)
    _add_enqueue(sub)
    _add_overlay(sub)
    return parser


# --- the fleet's processes ------------------------------------------------------------


def _add_up(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = sub.add_parser("up", help="run Redis, the workers and the API on this machine")
    up.add_argument("--host", default=None, help="API address (default SAM2FLEET_HOST)")
    up.add_argument("--port", type=int, default=None, help="API port (default SAM2FLEET_PORT)")
    up.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker count (default: one per visible GPU, else one CPU worker)",
    )
    up.add_argument(
        "--data-dir",
        type=Path,
        default=Path("var"),
        help="folder for the Redis data of a Redis started here (default ./var)",
    )
    up.add_argument(
        "--no-download", action="store_true", help="do not fetch a missing checkpoint; fail instead"
    )
    up.set_defaults(handler=_up, extras=SERVER_EXTRA)


def _up(args: argparse.Namespace) -> int:
    from sam2fleet.launcher.supervisor import Fleet, say
    from sam2fleet.shared.models import missing_checkpoint_message
    from sam2fleet.shared.settings import get_settings

    settings = get_settings()
    missing = None if settings.random_weights else missing_checkpoint_message(settings)
    if missing is not None:
        if args.no_download or settings.checkpoint is not None:
            say(missing)
            return 2
        say(f"no checkpoint for {settings.model}; downloading it first")
        if _download(settings.model) != 0:
            say(missing)
            return 2
    fleet = Fleet(
        settings,
        args.host or settings.host,
        args.port or settings.port,
        args.data_dir,
        workers=args.workers,
    )
    return fleet.run()


def _add_worker(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = sub.add_parser("worker", help="run one Celery worker holding one SAM 2 model")
    worker.add_argument("--name", default="worker", help="Celery node name")
    worker.add_argument("--loglevel", default="INFO")
    worker.set_defaults(handler=_worker, extras=(*SERVER_EXTRA, "model"))


def _worker(args: argparse.Namespace) -> int:
    from sam2fleet.shared.models import checkpoint_path, missing_checkpoint_message
    from sam2fleet.shared.records import Keys
    from sam2fleet.shared.settings import get_settings

    settings = get_settings()
    if not settings.random_weights:
        # Before Celery starts: a missing checkpoint is one clear message, not a traceback.
        missing = missing_checkpoint_message(settings)
        if missing is not None:
            print(f"sam2fleet worker: {missing}", file=sys.stderr)
            return 2
        print(f"sam2fleet worker: {settings.model} from {checkpoint_path(settings)}", flush=True)
    else:
        print(f"sam2fleet worker: {settings.model} (random weights allowed)", flush=True)
    argv = [
        "celery",
        "-A",
        "sam2fleet.worker.celery_app",
        "worker",
        "--pool",
        "prefork",
        "--concurrency",
        "1",  # one model per worker, in a child
        "-Q",
        Keys(settings.key_prefix).queue(settings.model),
        "--hostname",
        f"{args.name}@%h",
        "--without-gossip",
        "--without-mingle",
        "--loglevel",
        args.loglevel,
    ]
    os.execvp(sys.executable, [sys.executable, "-m", *argv])


def _add_worker_ready(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ready = sub.add_parser(
        "worker-ready",
        help="exit 0 when a worker on this host finished its warm-up (a container probe)",
        description="Reads the heartbeats in Redis: succeeds when a warm worker of "
        "SAM2FLEET_MODEL on this host was heard from within SAM2FLEET_HEARTBEAT_TTL_S.",
    )
    ready.set_defaults(handler=_worker_ready, extras=SERVER_EXTRA)


def _worker_ready(args: argparse.Namespace) -> int:
    from sam2fleet.launcher.worker_ready import run

    return run()


def _add_api(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    api = sub.add_parser("api", help="run the HTTP gateway")
    api.add_argument("--host", default=None)
    api.add_argument("--port", type=int, default=None)
    api.set_defaults(handler=_api, extras=SERVER_EXTRA)


def _api(args: argparse.Namespace) -> int:
    import uvicorn

    from sam2fleet.shared.logs import configure_logging
    from sam2fleet.shared.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_format, "INFO", service="api")
    # log_config=None: uvicorn's loggers propagate to the root handler set up above.
    uvicorn.run(
        "sam2fleet.api.main:app",
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_level="info",
        proxy_headers=False,
        log_config=None,
    )
    return 0


# --- administration ---------------------------------------------------------------------


def _add_checkpoints(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ckpt = sub.add_parser("checkpoints", help="manage Meta's SAM 2.1 checkpoints")
    ckpt.set_defaults(extras=SERVER_EXTRA)
    ckpt_sub = ckpt.add_subparsers(dest="action", required=True)
    dl = ckpt_sub.add_parser("download", help="download, resume and verify checkpoints")
    dl.add_argument(
        "model",
        nargs="?",
        default=None,
        help="a model name, or `all` (default SAM2FLEET_MODEL); `list` shows the names",
    )
    dl.set_defaults(handler=_checkpoints_download)
    ckpt_sub.add_parser("list", help="known models, files and pinned sha256").set_defaults(
        handler=_checkpoints_list
    )


def _checkpoints_list(args: argparse.Namespace) -> int:
    from sam2fleet.shared.models import MODELS

    for spec in MODELS.values():
        print(f"{spec.name:24} {spec.filename:28} {spec.bytes:>12,} B  {spec.sha256}")
    return 0


def _checkpoints_download(args: argparse.Namespace) -> int:
    from sam2fleet.shared.models import MODELS
    from sam2fleet.shared.settings import get_settings

    names = list(MODELS) if args.model == "all" else [args.model or get_settings().model]
    return max(_download(name) for name in names)


def _download(name: str) -> int:
    from sam2fleet.admin.checkpoints import ChecksumMismatch, DownloadError, download_checkpoint
    from sam2fleet.shared.models import MODELS
    from sam2fleet.shared.settings import get_settings

    settings = get_settings()
    spec = MODELS.get(name)
    if spec is None:
        print(f"unknown model {name!r}; known: {', '.join(MODELS)}", file=sys.stderr)
        return 2
    try:
        path = download_checkpoint(
            spec, settings.checkpoint_dir, base_url=settings.checkpoint_base_url
        )
    except ChecksumMismatch as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    except DownloadError as exc:
        print(f"download failed (run the command again to resume): {exc}", file=sys.stderr)
        return 1
    print(f"{spec.name}: {path} (sha256 verified)")
    return 0


def _add_keys(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="manage API keys (stored in Redis as sha256 digests)")
    keys_sub = keys.add_subparsers(dest="action", required=True)
    create = keys_sub.add_parser("create", help="make a key; it is printed once, never stored")
    create.add_argument("name", help="who the key is for (shown in `keys list`)")
    keys_sub.add_parser("list", help="names and digests of the keys in Redis")
    revoke = keys_sub.add_parser("revoke", help="remove keys by name or digest prefix")
    revoke.add_argument("name_or_digest")
    hash_ = keys_sub.add_parser("hash", help="the digest of a key, for SAM2FLEET_API_KEY_HASHES")
    hash_.add_argument("key")
    keys.set_defaults(handler=_keys, extras=SERVER_EXTRA)


def _keys(args: argparse.Namespace) -> int:
    from sam2fleet.admin import apikeys
    from sam2fleet.shared import redis_clients
    from sam2fleet.shared.records import Keys
    from sam2fleet.shared.settings import get_settings

    if args.action == "hash":
        print(apikeys.digest(args.key))
        return 0
    settings = get_settings()
    client = redis_clients.sync_client(settings.redis_url, socket_connect_timeout=3)
    keys = Keys(settings.key_prefix)
    if args.action == "create":
        key, digest = apikeys.create(client, keys, args.name)
        print(f"key for {args.name} (shown once; only its sha256 is stored):\n{key}")
        print(f"sha256: {digest}", file=sys.stderr)
    elif args.action == "list":
        for name, digest in apikeys.list_keys(client, keys):
            print(f"{name:24} {digest}")
    else:
        removed = apikeys.revoke(client, keys, args.name_or_digest)
        print(f"revoked {removed} key(s)")
        return 0 if removed else 1
    return 0


# --- client tools (no torch, no Celery, no server packages) -----------------------------


def _add_enqueue(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from sam2fleet.enqueue.arguments import add_arguments

    p = sub.add_parser(
        "enqueue",
        help="run a folder / glob / JSONL manifest / COCO file through the fleet",
        description="Submit every image of SOURCE with bounded concurrency, write COCO "
        "results (and optionally PNG masks and overlays) to --out. Re-running with the "
        "same --out resumes: done images are skipped, failed ones retried.",
    )
    add_arguments(p)
    p.add_argument(
        "--video-prompts",
        type=Path,
        default=None,
        help="videos: SOURCE is a folder of videos and this JSONL gives each one's "
        "prompts (see docs/video.md)",
    )
    p.set_defaults(handler=_enqueue)


def _enqueue(args: argparse.Namespace) -> int:
    if args.video_prompts is not None:
        from sam2fleet.video_enqueue import main as video_main

        return video_main(args)
    from sam2fleet.enqueue.command import main as enqueue_main

    return enqueue_main(args)


def _add_overlay(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "overlay",
        help="draw one job's masks and prompts over its image",
        description="TARGET is a per-image record written by `enqueue` (DIR/jobs/NAME.json), "
        "a job JSON saved from the API (needs --image), or a job id (fetched from "
        "--server, or looked up in --run DIR).",
    )
    p.add_argument("target", help="jobs/NAME.json, a saved job JSON, or a job id")
    p.add_argument("--image", type=Path, default=None, help="the job's image file")
    video = p.add_argument_group(
        "video jobs (TARGET: a job id, or an NDJSON of frame records from enqueue)"
    )
    video.add_argument(
        "--video", type=Path, default=None, help="the job's video file: writes an overlay MP4"
    )
    video.add_argument(
        "--strip", type=int, default=0, help="instead: a PNG of N frames side by side"
    )
    video.add_argument("--fps", type=float, default=None, help="frame rate of the MP4")
    p.add_argument(
        "--prompts",
        default=None,
        help='prompts to draw, as JSON: [{"box": [...]}, {"points": ...}]',
    )
    p.add_argument(
        "--run", type=Path, default=None, help="an enqueue output folder to look a job id up in"
    )
    p.add_argument(
        "--out", "-o", type=Path, default=None, help="output PNG (default: <target>.overlay.png)"
    )
    p.add_argument(
        "--all-candidates",
        action="store_true",
        help="draw every multimask candidate, not only each object's best",
    )
    p.add_argument(
        "--min-size",
        type=int,
        default=0,
        help="upscale small images so the long side is at least this many pixels",
    )
    p.add_argument("--server", default=None, help="API base URL (default SAM2FLEET_SERVER)")
    p.add_argument("--api-key", default=None, help="API key (default SAM2FLEET_API_KEY)")
    p.set_defaults(handler=_overlay)


def _overlay(args: argparse.Namespace) -> int:
    if args.video is not None:
        from sam2fleet.video_overlay import run_command as video_overlay

        return video_overlay(args)
    from sam2fleet.overlay import run_command

    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
