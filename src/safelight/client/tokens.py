"""Manage tokens of jobs created from this machine.

A job's ``manage_token`` is shown once, in the create response, and is needed to cancel or
retry it.  The command line keeps it in ``<config dir>/tokens.json`` (mode 0600), keyed by
server URL and job id, so ``safelight cancel JOB`` works later from the same account.  The
config dir is ``platformdirs.user_config_dir("safelight")``, or ``$SAFELIGHT_CONFIG_DIR``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import platformdirs

try:  # POSIX: serialise read-modify-write between concurrent CLI processes.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def config_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    override = env.get("SAFELIGHT_CONFIG_DIR")
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_config_dir("safelight", appauthor=False))


def normalize_server(url: str) -> str:
    return url.rstrip("/")


class TokenStore:
    """A small JSON file: ``{server_url: {job_id: token}}``, written atomically, 0600
    (``mkstemp`` creates it so)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def default(cls, environ: Mapping[str, str] | None = None) -> TokenStore:
        return cls(config_dir(environ) / "tokens.json")

    def get(self, server: str, job_id: str) -> str | None:
        token = self._read().get(normalize_server(server), {}).get(job_id)
        return token if isinstance(token, str) else None

    def put(self, server: str, job_id: str, token: str) -> None:
        with self._locked():
            data = self._read()
            data.setdefault(normalize_server(server), {})[job_id] = token
            self._write(data)

    def forget(self, server: str, job_id: str) -> None:
        with self._locked():
            data = self._read()
            if data.get(normalize_server(server), {}).pop(job_id, None) is not None:
                self._write(data)

    def _read(self) -> dict[str, dict[str, str]]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return {}
        if not isinstance(raw, dict):
            return {}
        return {str(k): dict(v) for k, v in raw.items() if isinstance(v, dict)}

    def _write(self, data: dict[str, dict[str, str]]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tokens-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if fcntl is None:  # pragma: no cover - Windows
            yield
            return
        lock = os.open(self.path.parent / ".tokens.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield
        finally:
            os.close(lock)
