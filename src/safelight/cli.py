"""The ``safelight`` command: ``serve`` (this module) plus the client commands
(``generate``, ``watch``, ``cancel``, ``retry``: ``safelight.client.cli``)."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gc
import os
import socket
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from safelight import __version__


@contextlib.contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """One embedded server per data directory: it owns the SQLite file and the workers,
    which is what lets start-up recovery treat every running job as orphaned."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / "safelight.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(
                f"safelight: another server is already using the data directory {data_dir}"
            ) from None
        yield
    finally:
        os.close(fd)


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from safelight.api.app import create_app
    from safelight.config import Settings
    from safelight.logs import configure_logging

    overrides: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "data_dir": args.data_dir,
        "concurrency": args.concurrency,
        "database_url": args.database_url,
        "provider": args.provider,
        "log_level": args.log_level,
    }
    if args.transports:
        overrides["transports"] = args.transports
    if args.providers:
        overrides["providers"] = args.providers
    if args.diffusers_model:
        overrides["diffusers_model"] = args.diffusers_model
    if args.diffusers_device:
        overrides["diffusers_device"] = args.diffusers_device
    if args.diffusers_allow_download:
        overrides["diffusers_allow_download"] = True
    try:
        settings = Settings.load(overrides)
    except (ValueError, TypeError) as exc:
        print(f"safelight: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        ws="wsproto",  # sans-io; lower memory per connection
        ws_per_message_deflate=False,
        ws_max_size=64 * 1024,
        ws_ping_interval=settings.ws_ping_interval_s,
        ws_ping_timeout=settings.ws_ping_timeout_s,
        timeout_graceful_shutdown=5,
        log_level=settings.log_level,
        log_config=None,  # safelight.logs configured the root logger
        access_log=False,  # api/access_log.py writes one structured record per request
        # uvicorn believes X-Forwarded-For/-Proto from 127.0.0.1 by default, which lets any
        # local process pick its client address (rate limits, stream caps): only from
        # configured proxies here.
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies) or None,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    lock = data_dir_lock(settings.data_dir) if settings.database_url is None else None
    with lock or contextlib.nullcontext():
        print(
            f"Safelight {__version__} on http://{settings.host}:{settings.port}  "
            f"(data: {settings.data_dir})",
            file=sys.stderr,
            flush=True,
        )
        # What is built by now lives as long as the process: keep it out of every later
        # collection, and collect the young generation less often, so full collections
        # (which walk every open stream's objects) stop stalling the loop for 100-200 ms
        # every second or two under fan-out (docs/benchmarks.md).
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        server.run()
    return 0


def worker(args: argparse.Namespace) -> int:
    """Scale-out: run worker slots against a PostgreSQL store, without HTTP."""
    import asyncio
    import signal

    from safelight.config import Settings
    from safelight.logs import configure_logging
    from safelight.runtime import Runtime

    overrides: dict[str, Any] = {
        "data_dir": args.data_dir,
        "concurrency": args.concurrency,
        "database_url": args.database_url,
        "provider": args.provider,
        "log_level": args.log_level,
        "node_name": args.name or socket.gethostname(),
    }
    if args.providers:
        overrides["providers"] = args.providers
    if args.diffusers_model:
        overrides["diffusers_model"] = args.diffusers_model
    try:
        settings = Settings.load(overrides)
    except (ValueError, TypeError) as exc:
        print(f"safelight: {exc}", file=sys.stderr)
        return 2
    if settings.database_url is None:
        print(
            "safelight worker: needs --database-url (a PostgreSQL URL). In embedded mode "
            "`safelight serve` runs the workers itself.",
            file=sys.stderr,
        )
        return 2
    configure_logging(settings)

    async def run() -> None:
        runtime = Runtime.build(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await runtime.start()
        print(
            f"Safelight worker {settings.node_name}: {settings.concurrency} slot(s)",
            file=sys.stderr,
            flush=True,
        )
        try:
            await stop.wait()
        finally:
            await runtime.stop()

    asyncio.run(run())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="safelight",
        description="Watch long-running image generations develop live.",
    )
    parser.add_argument("--version", action="version", version=f"safelight {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "serve",
        help="run the server (API, UI and in-process workers)",
        description="Run Safelight on one machine: API, web UI, SQLite store and workers. "
        "Every setting also reads SAFELIGHT_<NAME> from the environment (see README).",
    )
    p.add_argument("--host", default=None, help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 8000)")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where the database and images live (default: user data dir)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="in-process worker slots (default 1; 0 = API only)",
    )
    p.add_argument(
        "--database-url", default=None, help="database URL (default: SQLite in the data directory)"
    )
    p.add_argument("--provider", default=None, help="default provider (default builtin)")
    p.add_argument(
        "--providers", default=None, help="comma-separated providers to load (default builtin)"
    )
    p.add_argument(
        "--diffusers-model",
        default=None,
        help="local directory or cached model id for the diffusers provider",
    )
    p.add_argument("--diffusers-device", default=None, help="cuda, mps, cpu or auto (default auto)")
    p.add_argument(
        "--diffusers-allow-download",
        action="store_true",
        default=None,
        help="let the diffusers provider download a model id not in the local cache",
    )
    p.add_argument(
        "--transports",
        default=None,
        help="enabled transports, comma-separated subset of ws,sse,poll",
    )
    p.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=serve)

    w = sub.add_parser(
        "worker",
        help="scale-out: run workers against PostgreSQL (no HTTP)",
        description="Run worker slots on this machine against the shared PostgreSQL store. "
        "The data directory must be the blob directory every API node serves from "
        "(a shared mount).",
    )
    w.add_argument("--database-url", default=None, help="postgresql+psycopg://... (required)")
    w.add_argument("--data-dir", type=Path, default=None, help="shared data directory")
    w.add_argument("--concurrency", type=int, default=None, help="worker slots (default 1)")
    w.add_argument(
        "--name",
        default=None,
        help="node name used in lease owners and `running` events (default: host)",
    )
    w.add_argument("--provider", default=None, help="default provider (default builtin)")
    w.add_argument("--providers", default=None, help="providers to load, comma-separated")
    w.add_argument("--diffusers-model", default=None, help="model for the diffusers provider")
    w.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"])
    w.set_defaults(func=worker, name=None)
    try:
        from safelight.client.cli import register
    except ImportError:  # pragma: no cover - client not installed in this build
        pass
    else:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except KeyboardInterrupt:  # uvicorn re-raises the signal after a clean shutdown
        code = 130
    sys.exit(code)
