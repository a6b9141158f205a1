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
from typing import TYPE_CHECKING, Any

from safelight import __version__

if TYPE_CHECKING:
    from safelight.config import Settings


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


def _load_settings(
    overrides: dict[str, Any], defaults: dict[str, Any] | None = None
) -> Settings | None:
    """Settings for a server command, or None after printing one line saying what is wrong
    (bad value, or a chosen mode whose optional package is missing)."""
    from safelight import extras
    from safelight.config import Settings
    from safelight.errors import MissingExtra

    try:
        settings = Settings.load(overrides, defaults=defaults)
        extras.check(settings)
    except (ValueError, TypeError, MissingExtra) as exc:
        print(f"safelight: {exc}", file=sys.stderr)
        return None
    return settings


def blob_store_problem(settings: Settings) -> str | None:
    """One line if the configured blob store cannot be used (unreachable server, missing
    bucket, unwritable directory), checked before anything starts."""
    from safelight.blobs import create_blob_store
    from safelight.errors import SafelightError

    try:
        blobs = create_blob_store(settings)
    except SafelightError as exc:
        return str(exc)
    except ImportError as exc:
        extra = "s3" if settings.blob_store == "s3" else "postgres"
        return f"blob store {settings.blob_store!r} needs the {extra} extra ({exc})"
    try:
        blobs.ensure_ready()
    except SafelightError as exc:
        return str(exc)
    finally:
        blobs.close()
    return None


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from safelight.api.app import create_app
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
    settings = _load_settings(overrides)
    if settings is None:
        return 2
    configure_logging(settings)
    if (problem := blob_store_problem(settings)) is not None:
        print(f"safelight: {problem}", file=sys.stderr)
        return 2
    app = create_app(settings)
    config = uvicorn.Config(
        app,
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
    server = _draining_server(config, app)
    lock = data_dir_lock(settings.data_dir) if settings.database_url is None else None
    with lock or contextlib.nullcontext():
        code = check_schema(settings)
        if code:
            return code
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
    runtime = getattr(app.state, "runtime", None)
    if runtime is not None and runtime.crashed:
        print("safelight: a background task died; see the log above", file=sys.stderr)
        return 1
    return 0


def check_schema(settings: Any) -> int:
    """Before anything listens: the database's schema must be this release's (embedded:
    upgraded here; scale-out: created if empty, else refused when older or newer).
    Returns an exit status (0: go on), after printing one clear line."""
    from safelight.errors import SafelightError
    from safelight.store.migrate import SchemaPolicy
    from safelight.store.sql import SqlStore

    url = settings.database_url or f"sqlite:///{settings.sqlite_path}"
    policy = SchemaPolicy.INIT if settings.database_url else SchemaPolicy.UPGRADE
    try:
        SqlStore(url, policy).close()
    except SafelightError as exc:
        print(f"safelight: {exc}", file=sys.stderr)
        return 2
    return 0


def _draining_server(config: Any, app: Any) -> Any:
    """A uvicorn server that, on SIGTERM/SIGINT, starts the hand-over at once (slots stop
    claiming and hand their jobs back; /readyz turns red) while uvicorn drains connections
    (WebSockets get close 1012, SSE streams end)."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            ctx = getattr(app.state, "ctx", None)
            runtime = getattr(app.state, "runtime", None)
            if ctx is not None:
                ctx.begin_shutdown()
            if runtime is not None:
                runtime.begin_drain()
            super().handle_exit(sig, frame)

    return DrainingServer(config)


def worker(args: argparse.Namespace) -> int:
    """Scale-out: run worker slots against a PostgreSQL store, without HTTP."""
    import asyncio
    import signal

    from safelight.errors import SafelightError
    from safelight.logs import configure_logging
    from safelight.runtime import Runtime

    overrides: dict[str, Any] = {
        "data_dir": args.data_dir,
        "concurrency": args.concurrency,
        "database_url": args.database_url,
        "provider": args.provider,
        "log_level": args.log_level,
        "node_name": args.name,
    }
    if args.providers:
        overrides["providers"] = args.providers
    if args.diffusers_model:
        overrides["diffusers_model"] = args.diffusers_model
    # The host name is this command's default: SAFELIGHT_NODE_NAME and --name win.
    settings = _load_settings(overrides, defaults={"node_name": socket.gethostname()})
    if settings is None:
        return 2
    if settings.database_url is None:
        print(
            "safelight worker: needs --database-url (a PostgreSQL URL). In embedded mode "
            "`safelight serve` runs the workers itself.",
            file=sys.stderr,
        )
        return 2
    configure_logging(settings)
    if (problem := blob_store_problem(settings)) is not None:
        print(f"safelight worker: {problem}", file=sys.stderr)
        return 2

    async def run() -> int:
        try:
            runtime = Runtime.build(settings)
        except SafelightError as exc:  # schema too old/new, database unreachable
            print(f"safelight worker: {exc}", file=sys.stderr)
            return 2
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            runtime.begin_drain()  # stop claiming now; stop() hands the job back
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        runtime.on_crash = stop.set
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
        if runtime.crashed:
            print("safelight worker: a background task died; exiting", file=sys.stderr)
            return 1
        return 0

    return asyncio.run(run())


def db(args: argparse.Namespace) -> int:
    """``safelight db upgrade|current``: schema migrations (store/migrate.py)."""
    from safelight.errors import SafelightError
    from safelight.store import migrate
    from safelight.store.sql import SqlStore

    overrides = {"database_url": args.database_url, "data_dir": args.data_dir}
    settings = _load_settings(overrides)
    if settings is None:
        return 2
    url = settings.database_url or f"sqlite:///{settings.sqlite_path}"
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        if args.db_command == "current":
            from sqlalchemy import create_engine

            engine = create_engine(url)
            try:
                with engine.connect() as conn:
                    info = migrate.describe(conn)
            finally:
                engine.dispose()
            print(f"database: {info['database'] or 'empty'}  this release: {info['head']}")
            return 0
        store = SqlStore(url, migrate.SchemaPolicy.UPGRADE)
        found = store.schema_found
        store.close()
    except SafelightError as exc:
        print(f"safelight: {exc}", file=sys.stderr)
        return 2
    if found == migrate.HEAD:
        print(f"safelight: the database is already at {migrate.HEAD}")
    else:
        print(f"safelight: upgraded the database from {found or 'empty'} to {migrate.HEAD}")
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
        "With the default blob store (local) the data directory must be the blob directory "
        "every API node serves from (a shared mount); with SAFELIGHT_BLOB_STORE=postgres or "
        "s3 it is only local scratch.",
    )
    w.add_argument("--database-url", default=None, help="postgresql+psycopg://... (required)")
    w.add_argument(
        "--data-dir", type=Path, default=None, help="data directory (shared if blob store local)"
    )
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

    d = sub.add_parser(
        "db",
        help="database schema: upgrade it, or show its revision",
        description="Schema migrations (one history for SQLite and PostgreSQL). Scale-out "
        "nodes refuse an older database: stop them, run `safelight db upgrade`, then start "
        "the new release.",
    )
    d.add_argument("db_command", choices=["upgrade", "current"])
    d.add_argument("--database-url", default=None, help="default: SQLite in the data dir")
    d.add_argument("--data-dir", type=Path, default=None, help="embedded data directory")
    d.set_defaults(func=db)
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
