"""The `sam2fleet` command: up, worker, api, checkpoints."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from shared.checkpoints import MODELS, ChecksumMismatch, DownloadError, download_checkpoint
from shared.settings import Settings, get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sam2fleet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

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

    worker = sub.add_parser("worker", help="run one Celery worker holding one SAM 2 model")
    worker.add_argument("--name", default="worker", help="Celery node name")
    worker.add_argument("--loglevel", default="INFO")

    api = sub.add_parser("api", help="run the HTTP gateway")
    api.add_argument("--host", default=None)
    api.add_argument("--port", type=int, default=None)

    ckpt = sub.add_parser("checkpoints", help="manage Meta's SAM 2.1 checkpoints")
    ckpt_sub = ckpt.add_subparsers(dest="action", required=True)
    dl = ckpt_sub.add_parser("download", help="download, resume and verify checkpoints")
    dl.add_argument(
        "model",
        nargs="?",
        default=None,
        help=f"one of {', '.join(MODELS)}, or `all` (default SAM2FLEET_MODEL)",
    )
    ckpt_sub.add_parser("list", help="known models, files and pinned sha256")

    keys = sub.add_parser("keys", help="manage API keys (stored in Redis as sha256 digests)")
    keys_sub = keys.add_subparsers(dest="action", required=True)
    create = keys_sub.add_parser("create", help="make a key; it is printed once, never stored")
    create.add_argument("name", help="who the key is for (shown in `keys list`)")
    keys_sub.add_parser("list", help="names and digests of the keys in Redis")
    revoke = keys_sub.add_parser("revoke", help="remove keys by name or digest prefix")
    revoke.add_argument("name_or_digest")
    hash_ = keys_sub.add_parser("hash", help="the digest of a key, for SAM2FLEET_API_KEY_HASHES")
    hash_.add_argument("key")

    from sam2fleet.cli import add_enqueue, add_overlay  # client side: no torch, no celery

    add_enqueue(sub)
    add_overlay(sub)

    args = parser.parse_args(argv)
    if args.command in ("enqueue", "overlay"):
        from sam2fleet import cli as client_cli

        return getattr(client_cli, args.command)(args)
    if args.command == "keys":
        return _keys(args)
    if args.command == "up":
        return _up(args)
    if args.command == "worker":
        return _worker(args)
    if args.command == "api":
        return _api(args)
    return _checkpoints(args)


def _up(args: argparse.Namespace) -> int:
    from shared.fleet import Fleet, say

    settings = get_settings()
    if not _weights_present(settings) and not settings.random_weights:
        if args.no_download:
            say(_missing_weights_message(settings))
            return 2
        say(f"no checkpoint for {settings.model}; downloading it first")
        if _download(settings.model, settings) != 0:
            say(_missing_weights_message(settings))
            return 2
    fleet = Fleet(
        settings,
        args.host or settings.host,
        args.port or settings.port,
        args.data_dir,
        workers=args.workers,
    )
    return fleet.run()


def _weights_present(settings: Settings) -> bool:
    if settings.checkpoint is not None:
        return settings.checkpoint.is_file()
    spec = MODELS.get(settings.model)
    return spec is not None and (settings.checkpoint_dir / spec.filename).is_file()


def _missing_weights_message(settings: Settings) -> str:
    return (
        f"no checkpoint for {settings.model} in {settings.checkpoint_dir}/. Either\n"
        f"  - download it where the network allows: sam2fleet checkpoints download "
        f"{settings.model}\n"
        f"  - or copy Meta's file there, or set SAM2FLEET_CHECKPOINT=/path/to/file.pt\n"
        f"  - or, for a demo or speed test without real weights, opt into seeded random\n"
        f"    weights (masks are meaningless): SAM2FLEET_RANDOM_WEIGHTS=1 make run"
    )


def _worker(args: argparse.Namespace) -> int:
    from shared.errors import ModelUnavailable
    from worker.weights import resolve_weights

    settings = get_settings()
    try:
        # Before Celery starts: a missing checkpoint is one clear line, not a traceback.
        weights = resolve_weights(settings)
    except ModelUnavailable as exc:
        print(f"sam2fleet worker: {exc.message}", file=sys.stderr)
        return 2
    print(
        f"sam2fleet worker: {settings.model} from {weights.path} ({weights.kind} weights)",
        flush=True,
    )
    argv = [
        "celery",
        "-A",
        "worker.celery_app",
        "worker",
        "--pool",
        "prefork",
        "--concurrency",
        "1",  # one model per worker, in a child
        "-Q",
        settings.queue_for(settings.model),
        "--hostname",
        f"{args.name}@%h",
        "--without-gossip",
        "--without-mingle",
        "--loglevel",
        args.loglevel,
    ]
    os.execvp(sys.executable, [sys.executable, "-m", *argv])
    return 0  # not reached


def _api(args: argparse.Namespace) -> int:
    import uvicorn

    from shared.logs import configure_logging

    settings = get_settings()
    configure_logging(settings.log_format, "INFO", service="api")
    # log_config=None: uvicorn's loggers propagate to the root handler set up above.
    uvicorn.run(
        "api.main:app",
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_level="info",
        proxy_headers=False,
        log_config=None,
    )
    return 0


def _keys(args: argparse.Namespace) -> int:
    import redis

    from shared import apikeys
    from shared.keys import Keys

    if args.action == "hash":
        print(apikeys.digest(args.key))
        return 0
    settings = get_settings()
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3)
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


def _checkpoints(args: argparse.Namespace) -> int:
    settings = get_settings()
    if args.action == "list":
        for spec in MODELS.values():
            print(f"{spec.name:24} {spec.filename:28} {spec.bytes:>12,} B  {spec.sha256}")
        return 0
    names = list(MODELS) if args.model == "all" else [args.model or settings.model]
    return max(_download(name, settings) for name in names)


def _download(name: str, settings: Settings) -> int:
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


if __name__ == "__main__":
    sys.exit(main())
