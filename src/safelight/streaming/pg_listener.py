"""Scale-out fan-out: LISTEN for the ids of events committed by any node.

Each API (and worker) node holds one PostgreSQL connection in LISTEN mode.  A notification
names ``job_id:seq``; the listener reads that event from the table (the source of truth)
and hands it to the node's ``deliver`` callback (broadcaster, worker wake-ups, cancel
signals).  After a reconnect it re-announces the newest event of every job this node's
clients follow: followers backfill any gap from the store, so nothing is lost while the
listener was down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg
from sqlalchemy.engine import make_url

from safelight.models import Event
from safelight.store.runner import AsyncStore
from safelight.store.sql import NOTIFY_CHANNEL, SqlStore
from safelight.streaming.broadcaster import Broadcaster

log = logging.getLogger("safelight.listener")


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
        reconnect_s: float = 1.0,
    ) -> None:
        self.dsn = libpq_dsn(database_url)
        self.store = store
        self.broadcaster = broadcaster
        self.deliver = deliver
        self.reconnect_s = reconnect_s
        self.connected = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                await self._listen()
            except (psycopg.Error, OSError) as exc:
                log.warning("LISTEN connection lost (%s); reconnecting", exc)
            self.connected.clear()
            await asyncio.sleep(self.reconnect_s)

    async def _listen(self) -> None:
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
            await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            self.connected.set()
            await self._resync()
            async for note in conn.notifies():
                job_id, _, seq = note.payload.rpartition(":")
                if not job_id or not seq.isdigit():
                    continue
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
