"""Scale-out fan-out: LISTEN for the ids of events committed by any node.

Each API (and worker) node holds one PostgreSQL connection in LISTEN mode.  A notification
names ``job_id:seq:type``; when this node follows the job (or the type concerns every node:
``queued``, ``cancel_requested``) the listener reads that event from the table (the source of truth)
and hands it to the node's ``deliver`` callback (broadcaster, worker wake-ups, cancel
signals).  After a reconnect it re-announces the newest event of every job this node's
clients follow: followers backfill any gap from the store, so nothing is lost while the
listener was down.

The loop never ends on its own: any failure (connection refused or dropped, a store read
failing during a database restart) closes the connection and reconnects with backoff.
While it is down, ``connected`` is clear and the node reports not ready.  A connection that
dies without a FIN (a cut network) is noticed by a probe every ``probe_s``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg
from sqlalchemy.engine import make_url

from safelight.models import Event
from safelight.retry import Backoff
from safelight.store.runner import AsyncStore
from safelight.store.sql import NOTIFY_CHANNEL, SqlStore
from safelight.streaming.broadcaster import Broadcaster
from safelight.types import EventType

log = logging.getLogger("safelight.listener")
# Event types every node needs whoever follows the job: queued wakes idle worker slots,
# cancel_requested reaches the worker running the job.
NODE_WIDE = frozenset({EventType.QUEUED.value, EventType.CANCEL_REQUESTED.value})


def libpq_dsn(sqlalchemy_url: str) -> str:
    """``postgresql+psycopg://u@h/db`` -> ``postgresql://u@h/db`` for psycopg itself."""
    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class PgListener:
    def __init__(
        self,
        database_url: str,
        store: AsyncStore,
        broadcaster: Broadcaster,
        deliver: Callable[[list[Event]], None],
        retry: Backoff | None = None,
        probe_s: float = 5.0,
        on_reconnect: Callable[[], object] | None = None,
    ) -> None:
        self.dsn = libpq_dsn(database_url)
        self.store = store
        self.broadcaster = broadcaster
        self.deliver = deliver
        self.retry = retry or Backoff(0.1, 2.0)
        self.probe_s = probe_s
        self.on_reconnect = on_reconnect
        self.connected = asyncio.Event()
        self.connections = 0  # successful LISTENs so far (1 + reconnects)
        self.skipped = 0  # notifications not read: nobody here needs them

    async def run(self) -> None:
        while True:
            try:
                await self._listen()
            except Exception as exc:  # any failure: reconnect (CancelledError passes)
                first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                log.warning("LISTEN connection lost (%s); reconnecting", first_line)
            self.connected.clear()
            await asyncio.sleep(self.retry.next())

    async def _listen(self) -> None:
        connect = psycopg.AsyncConnection.connect(
            self.dsn, autocommit=True, connect_timeout=max(1, round(self.probe_s))
        )
        async with await connect as conn:
            await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            self.connections += 1
            await self._resync()
            self.connected.set()
            self.retry.reset()
            if self.on_reconnect is not None:
                self.on_reconnect()
            while True:
                async for note in conn.notifies(timeout=self.probe_s):
                    await self._on_note(note.payload)
                # Quiet for probe_s: make sure the connection is still alive.
                async with asyncio.timeout(self.probe_s):
                    await conn.execute("SELECT 1")

    async def _on_note(self, payload: str) -> None:
        job_id, seq, kind = [*payload.split(":"), "", ""][:3]
        if not job_id or not seq.isdigit():
            return
        if kind not in NODE_WIDE and job_id not in self.broadcaster.followed():
            # Nobody here follows this job and it wakes nothing: do not read it.  (Most
            # events on a busy cluster; reading each on every node was the cost.)
            self.skipped += 1
            return
        events = await self.store.read(SqlStore.read_events, job_id, int(seq) - 1, 1)
        if events:
            self.deliver(events)

    async def _resync(self) -> None:
        for job_id in self.broadcaster.followed():
            job = await self.store.read(SqlStore.get_job, job_id)
            if job is None or job.last_seq == 0:
                continue
            events = await self.store.read(SqlStore.read_events, job_id, job.last_seq - 1, 1)
            self.deliver(events)
