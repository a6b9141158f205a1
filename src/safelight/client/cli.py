"""``safelight generate | watch | cancel | retry | restart``: the client's command line.

``register(subparsers)`` adds the subcommands to the ``safelight`` parser (``safelight.cli``
owns the top level); each sets ``func(args) -> int``, the exit code below.
"""

from __future__ import annotations

import argparse
import enum
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from safelight.client._display import make_view
from safelight.client.clients import DEFAULT_SERVER, Client
from safelight.client.errors import ConnectionFailed, TransportRefused
from safelight.client.models import Event, Job
from safelight.client.stream import StreamSettings
from safelight.client.tokens import TokenStore
from safelight.errors import (
    Conflict,
    Forbidden,
    SafelightError,
    ValidationFailed,
)
from safelight.types import JobStatus, Transport


class ExitCode(enum.IntEnum):
    """What a script can rely on (docs/client.md has the same table)."""

    COMPLETED = 0  # the job completed (cancel/retry: the server accepted the request)
    ERROR = 1  # an unexpected error in the client itself
    USAGE = 2  # bad arguments, or settings the server rejected (422)
    FAILED = 3  # the job failed
    CANCELLED = 4  # the job was cancelled
    CONNECTION = 5  # the server could not be reached, or the stream could not be resumed
    REFUSED = 6  # the server refused: unknown job, wrong token, not allowed now, busy
    DETACHED = 130  # interrupted (Ctrl-C) and detached: the job goes on


EXIT_CODES_HELP = """\
exit codes:
  0    completed (cancel, retry: request accepted)
  2    usage error, or settings the server rejected (422)
  3    the job failed
  4    the job was cancelled
  5    cannot reach the server / connection lost for good
  6    refused by the server: unknown job (404), wrong or missing
       manage token (403), not allowed in the job's state (409),
       busy (429, 503)
  130  interrupted with Ctrl-C and detached (the job keeps running)
  1    unexpected error in the client

environment:
  SAFELIGHT_SERVER      default server URL (else http://127.0.0.1:8000)
  SAFELIGHT_CONFIG_DIR  where tokens.json keeps manage tokens
"""

_TERMINAL_EXIT = {
    JobStatus.COMPLETED: ExitCode.COMPLETED,
    JobStatus.FAILED: ExitCode.FAILED,
    JobStatus.CANCELLED: ExitCode.CANCELLED,
}


def _size(text: str) -> tuple[int, int]:
    try:
        width, _, height = text.lower().partition("x")
        return int(width), int(height or width)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT, like 768x768, not {text!r}"
        ) from None


def _server_default() -> str:
    return os.environ.get("SAFELIGHT_SERVER") or DEFAULT_SERVER


def parse_job_ref(ref: str, server: str | None) -> tuple[str, str]:
    """``(server_url, job_id)`` from a job id, a page URL (``.../jobs/{id}``) or an API URL
    (``.../api/jobs/{id}[/...]``).  A URL names its server; an id uses ``server``."""
    if "://" not in ref:
        return (server or _server_default()).rstrip("/"), ref.strip("/")
    parts = urlsplit(ref)
    segments = [s for s in parts.path.split("/") if s]
    for i in range(len(segments) - 1):
        if segments[i] == "jobs":
            prefix = segments[: i - 1] if i > 0 and segments[i - 1] == "api" else segments[:i]
            base = f"{parts.scheme}://{parts.netloc}" + "".join(f"/{s}" for s in prefix)
            return base, segments[i + 1]
    raise argparse.ArgumentTypeError(f"not a job URL (no /jobs/<id> in it): {ref}")


# -- argument parsing --------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser, *, stream: bool = True) -> None:
    parser.add_argument(
        "--server",
        default=None,
        help=f"server URL (default: $SAFELIGHT_SERVER or {DEFAULT_SERVER})",
    )
    if stream:
        parser.add_argument(
            "--transport",
            choices=[t.value for t in Transport],
            default=None,
            help="use only this transport (default: WebSocket, falling back to SSE, then polling)",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            help="print the raw events as NDJSON on stdout (nothing else goes to stdout)",
        )
        parser.add_argument(
            "--out",
            type=Path,
            default=None,
            help="directory for the final images",
        )
        parser.add_argument(
            "--give-up-after",
            type=float,
            default=120.0,
            metavar="SECONDS",
            help="exit 5 after this long without any connection (default 120)",
        )


def _settings_args(parser: argparse.ArgumentParser, *, required_prompt: bool) -> None:
    if required_prompt:
        parser.add_argument("prompt", help="what to generate")
    else:
        parser.add_argument("--prompt", default=None, help="a new prompt")
    parser.add_argument("--negative", default=None, help="negative prompt")
    parser.add_argument("--size", type=_size, default=None, help="WIDTHxHEIGHT, e.g. 768x768")
    parser.add_argument("--steps", type=int, default=None, help="steps (1..150)")
    parser.add_argument("--style", default=None, help="a style of the provider")
    parser.add_argument("--seed", type=int, default=None, help="seed (default: server picks)")
    parser.add_argument(
        "-n", "--num-images", type=int, default=None, dest="num_images", help="images (1..4)"
    )
    parser.add_argument("--provider", default=None, help="provider name (default: server's)")


def _token_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--token",
        default=None,
        help="manage token (default: the one remembered when this machine created the job)",
    )


def _detach_arg(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--detach",
        action="store_true",
        help=f"{what}, print the job id and exit without watching",
    )


def register(subparsers: Any) -> None:
    """Add ``generate``, ``watch``, ``cancel``, ``retry`` and ``restart``."""
    fmt = argparse.RawDescriptionHelpFormatter

    p = subparsers.add_parser(
        "generate",
        help="create a job, watch it live and save the images",
        description="Create a job, show its progress live, save the final images to --out "
        "(default: the current directory) and print their paths. Ctrl-C offers to cancel "
        "the job or detach from it.",
        epilog=EXIT_CODES_HELP,
        formatter_class=fmt,
    )
    _settings_args(p, required_prompt=True)
    p.add_argument(
        "--webhook",
        default=None,
        metavar="URL",
        help="POST signed updates about the job to this URL (docs/webhooks.md)",
    )
    p.add_argument(
        "--webhook-events",
        default=None,
        metavar="LIST",
        help="comma-separated: started, progress, preview, completed, failed, cancelled "
        "(default: completed,failed,cancelled)",
    )
    _common(p)
    _detach_arg(p, "create the job")
    p.set_defaults(func=_entry(cmd_generate))

    p = subparsers.add_parser(
        "watch",
        help="follow a job live (by id or URL)",
        description="Follow a job's progress live until it ends. JOB is a job id, its page "
        "URL (http://host/jobs/ID) or an API URL; a URL names the server.",
        epilog=EXIT_CODES_HELP,
        formatter_class=fmt,
    )
    p.add_argument("job", metavar="JOB_ID_OR_URL")
    p.add_argument(
        "--after",
        type=int,
        default=None,
        help="with --json: print events after this seq (default 0: the whole log)",
    )
    _common(p)
    _token_arg(p)
    p.set_defaults(func=_entry(cmd_watch))

    p = subparsers.add_parser(
        "cancel",
        help="cancel a job",
        description="Ask the server to cancel a job (needs its manage token).",
        epilog=EXIT_CODES_HELP,
        formatter_class=fmt,
    )
    p.add_argument("job", metavar="JOB_ID_OR_URL")
    p.add_argument(
        "--wait",
        action="store_true",
        help="wait until the job has stopped; exit with its final status",
    )
    _common(p, stream=False)
    _token_arg(p)
    p.set_defaults(func=_entry(cmd_cancel))

    p = subparsers.add_parser(
        "retry",
        help="retry a failed job (next attempt) and watch it",
        description="Retry a failed job: the same job runs again as its next attempt. "
        "Then watch it, like generate.",
        epilog=EXIT_CODES_HELP,
        formatter_class=fmt,
    )
    p.add_argument("job", metavar="JOB_ID_OR_URL")
    _common(p)
    _token_arg(p)
    _detach_arg(p, "retry")
    p.set_defaults(func=_entry(cmd_retry))

    p = subparsers.add_parser(
        "restart",
        help="start a new job from an old one's settings (with changes) and watch it",
        description="Create a new job with the settings of JOB, changed by any options "
        "given (the parent's seed is kept unless --seed or --new-seed), and watch it.",
        epilog=EXIT_CODES_HELP,
        formatter_class=fmt,
    )
    p.add_argument("job", metavar="JOB_ID_OR_URL")
    _settings_args(p, required_prompt=False)
    p.add_argument("--new-seed", action="store_true", help="let the server pick a new seed")
    _common(p)
    _detach_arg(p, "create the job")
    p.set_defaults(func=_entry(cmd_restart))


# -- running -----------------------------------------------------------------------------


def _err(message: str) -> None:
    print(f"safelight: {message}", file=sys.stderr, flush=True)


def _entry(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Map the exception tree to exit codes, with one plain line on stderr."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except KeyboardInterrupt:
            _err("interrupted")
            return ExitCode.DETACHED
        except TransportRefused as exc:
            _err(f"{exc.message} (try another --transport, or none to let the client choose)")
            return ExitCode.CONNECTION
        except ConnectionFailed as exc:
            _err(f"cannot reach the server: {exc.message}")
            return ExitCode.CONNECTION
        except ValidationFailed as exc:
            if exc.errors:
                for error in exc.errors:
                    _err(f"invalid {error['field']}: {error['message']}")
            else:
                _err(f"invalid request: {exc.message}")
            return ExitCode.USAGE
        except Forbidden as exc:
            _err(
                f"forbidden: {exc.message} (cancel and retry need the job's manage token: "
                "jobs created on another machine need --token)"
            )
            return ExitCode.REFUSED
        except SafelightError as exc:
            _err(f"{exc.message} ({exc.code})")
            return ExitCode.REFUSED

    return run


def _client(server: str, args: argparse.Namespace, store: TokenStore) -> Client:
    give_up = getattr(args, "give_up_after", 120.0)
    return Client(
        server,
        tokens=store,
        stream_settings=StreamSettings(give_up_after_s=give_up if give_up > 0 else None),
    )


def _settings_from(args: argparse.Namespace) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "negative_prompt": args.negative,
        "steps": args.steps,
        "style": args.style,
        "seed": args.seed,
        "num_images": args.num_images,
        "provider": args.provider,
    }
    if args.size is not None:
        settings["width"], settings["height"] = args.size
    return {k: v for k, v in settings.items() if v is not None}


def cmd_generate(args: argparse.Namespace) -> int:
    store = TokenStore.default()
    server = (args.server or _server_default()).rstrip("/")
    with _client(server, args, store) as client:
        job = client.create(args.prompt, webhook=_webhook_from(args), **_settings_from(args))
        return _after_create(client, job, args)


def _webhook_from(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.webhook is None:
        return None
    hook: dict[str, Any] = {"url": args.webhook}
    if args.webhook_events:
        hook["events"] = [e.strip() for e in args.webhook_events.split(",") if e.strip()]
    return hook


def cmd_restart(args: argparse.Namespace) -> int:
    store = TokenStore.default()
    server, job_id = parse_job_ref(args.job, args.server)
    changes = _settings_from(args)
    if args.prompt is not None:
        changes["prompt"] = args.prompt
    if args.new_seed:
        changes["seed"] = None
    with _client(server, args, store) as client:
        job = client.restart(job_id, **changes)
        return _after_create(client, job, args)


def _after_create(client: Client, job: Job, args: argparse.Namespace) -> int:
    _err(f"job {job.id} created: {client.page_url(job.id)}")
    if args.detach:
        print(job.id, flush=True)
        return ExitCode.COMPLETED
    out = args.out if args.out is not None or args.json else Path()
    return follow(client, job.id, after=0, out=out, args=args, token=None, initial=job)


def cmd_watch(args: argparse.Namespace) -> int:
    store = TokenStore.default()
    server, job_id = parse_job_ref(args.job, args.server)
    with _client(server, args, store) as client:
        job = client.get(job_id)
        # The live view starts from the job as it is now; --json prints the whole log.
        default_after = 0 if args.json else job.last_seq
        after = default_after if args.after is None else args.after
        return follow(
            client, job_id, after=after, out=args.out, args=args, token=args.token, initial=job
        )


def cmd_cancel(args: argparse.Namespace) -> int:
    store = TokenStore.default()
    server, job_id = parse_job_ref(args.job, args.server)
    with _client(server, args, store) as client:
        job = client.cancel(job_id, token=args.token)
        _err(f"job {job.id}: {job.status}" + (" (stopping)" if job.cancel_requested else ""))
        if not args.wait:
            return ExitCode.COMPLETED
        final = client.wait(job_id, after=job.last_seq) if not job.terminal else job
        return _TERMINAL_EXIT.get(final.status, ExitCode.ERROR)


def cmd_retry(args: argparse.Namespace) -> int:
    store = TokenStore.default()
    server, job_id = parse_job_ref(args.job, args.server)
    with _client(server, args, store) as client:
        before = client.get(job_id)
        job = client.retry(job_id, token=args.token)
        _err(f"job {job.id}: attempt {job.attempt} of {job.max_attempts} {job.status}")
        if args.detach:
            print(job.id, flush=True)
            return ExitCode.COMPLETED
        out = args.out if args.out is not None or args.json else Path()
        return follow(
            client, job_id, after=before.last_seq, out=out, args=args, token=args.token, initial=job
        )


# -- following a job ---------------------------------------------------------------------


def _ask_cancel(prompt_out: TextIO) -> bool:
    """Ask "cancel or detach?" on a terminal; anything but c/cancel means detach."""
    if not sys.stdin or not sys.stdin.isatty():
        return False
    prompt_out.write("\ncancel the job or detach? [c/D] ")
    prompt_out.flush()
    try:
        answer = sys.stdin.readline()
    except (KeyboardInterrupt, EOFError):
        return False
    return answer.strip().lower() in ("c", "cancel")


def follow(
    client: Client,
    job_id: str,
    *,
    after: int,
    out: Path | None,
    args: argparse.Namespace,
    token: str | None,
    initial: Job | None = None,
) -> int:
    """Stream the job's events to the view (or NDJSON) until the end; save the images.

    Ctrl-C asks "cancel or detach?" on a terminal (detach otherwise, or when no manage
    token is known); a second Ctrl-C detaches.
    """
    json_mode: bool = args.json
    view = make_view(json_mode=json_mode, initial=initial)
    can_cancel = (token or client.tokens.get(client.base_url, job_id)) is not None
    last: Event | None = None
    cancelling = False
    with client.events(job_id, after=after, transport=args.transport) as stream:
        view.start(stream)
        try:
            while True:
                try:
                    event = next(stream)
                except StopIteration:
                    break
                except KeyboardInterrupt:
                    view.pause()
                    if cancelling or not can_cancel or not _ask_cancel(sys.stderr):
                        if not can_cancel and sys.stdin and sys.stdin.isatty():
                            _err("no manage token for this job here, so detaching")
                        _err(f"detached; the job goes on: {client.page_url(job_id)}")
                        return ExitCode.DETACHED
                    cancelling = True
                    try:
                        client.cancel(job_id, token=token)
                        _err("cancel requested; waiting for the job to stop")
                    except Conflict as exc:
                        _err(f"cannot cancel: {exc.message}")
                    view.resume()
                    continue
                last = event
                if json_mode:
                    sys.stdout.write(json.dumps(event.raw, separators=(",", ":")) + "\n")
                    sys.stdout.flush()
                view.update(event)
        finally:
            view.stop()
        reset_job = stream.job
    if last is None or not last.terminal:
        # Nothing new from our cursor: the job had already ended, or the log was reset.
        job = reset_job or client.get(job_id)
        status = job.status
        error = job.error
    else:
        status = JobStatus(last.type)
        error = last.error
    if status is JobStatus.COMPLETED:
        if out is not None:
            for path in client.download(job_id, out):
                stream_out = sys.stderr if json_mode else sys.stdout
                print(path, file=stream_out, flush=True)
        return ExitCode.COMPLETED
    if status is JobStatus.FAILED:
        if error is not None:
            _err(f"failed: {error.message} ({error.type}/{error.code})")
            if error.retryable:
                _err(f"retry with: safelight retry {job_id}")
        return ExitCode.FAILED
    if status is JobStatus.CANCELLED:
        _err("cancelled")
        return ExitCode.CANCELLED
    _err(f"the stream ended with the job {status}")
    return ExitCode.ERROR


__all__ = ["EXIT_CODES_HELP", "ExitCode", "follow", "parse_job_ref", "register"]
