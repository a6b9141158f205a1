"""Runs the synchronous store off the event loop.

Writes go through ONE thread (SQLite allows one writer; a single thread also keeps commit
order equal to the order in which callers resume).  Reads use a small pool of threads:
WAL lets them proceed while a write is in progress.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Concatenate, ParamSpec, TypeVar

from safelight.store.sql import SqlStore

P = ParamSpec("P")
T = TypeVar("T")


class AsyncStore:
    def __init__(self, store: SqlStore, read_threads: int = 4) -> None:
        self.sync = store
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="safelight-store-w")
        self._readers = ThreadPoolExecutor(read_threads, thread_name_prefix="safelight-store-r")

    async def write(
        self, method: Callable[Concatenate[SqlStore, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``SqlStore.method(store, ...)`` on the writer thread."""
        loop = asyncio.get_running_loop()
        call = functools.partial(method, self.sync, *args, **kwargs)
        return await loop.run_in_executor(self._writer, call)

    async def read(
        self, method: Callable[Concatenate[SqlStore, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``SqlStore.method(store, ...)`` on a reader thread."""
        loop = asyncio.get_running_loop()
        call = functools.partial(method, self.sync, *args, **kwargs)
        return await loop.run_in_executor(self._readers, call)

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self.sync.close()
