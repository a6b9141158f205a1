"""A userspace TCP fault proxy on loopback, between real clients and a real server.

Modes (switchable while connections are open):

* ``pass()``: forward both ways.
* ``blackhole()``: stop forwarding and stop reading, both ways, on every connection, with
  no FIN and no RST - what a dropped route looks like to both ends.  New connections are
  accepted (the kernel completes the handshake) but never reach the server.  Data
  waiting in the proxy is forwarded, and closes propagate, only after ``pass()``.
* ``reset(lo, hi)``: each connection (existing and new) is aborted with an RST towards
  both ends after a random number of forwarded bytes in ``[lo, hi]`` (both directions
  counted, so handshakes and frame bodies are cut too).
* ``slow(bytes_per_s)``: server-to-client bytes trickle at that rate - a slow reader as
  the server sees it (its writes back up).

Only loopback is ever bound or dialled.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from dataclasses import dataclass, field

CHUNK = 65536


@dataclass(eq=False)  # hashed by identity: links live in a set
class _Link:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter | None = None
    budget: int | None = None  # bytes left before an RST (reset mode)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    eofs: int = 0
    closed: bool = False


def _rst(writer: asyncio.StreamWriter | None) -> None:
    """Close with an RST (SO_LINGER 0) rather than a FIN."""
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    def __init__(self, upstream_port: int, *, rng: random.Random | None = None) -> None:
        self.upstream_port = upstream_port
        self.rng = rng or random.Random()
        self.port = 0
        self.url = ""
        self.links: set[_Link] = set()
        self.accepted = 0
        self.resets = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._reset_range: tuple[int, int] | None = None
        self._rate: float | None = None
        self._server: asyncio.Server | None = None

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self.links):
            self._drop(link, rst=False)
        if self._server is not None:
            await self._server.wait_closed()

    # -- modes ----------------------------------------------------------------------------

    def pass_(self) -> None:
        self._reset_range = None
        self._rate = None
        self._flowing.set()

    def blackhole(self) -> None:
        self._flowing.clear()

    def reset(self, lo: int, hi: int) -> None:
        self._reset_range = (lo, hi)
        for link in self.links:
            link.budget = self.rng.randint(lo, hi)
        self._flowing.set()

    def slow(self, bytes_per_s: float) -> None:
        self._rate = bytes_per_s
        self._flowing.set()

    # -- plumbing -------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        link = _Link(writer)
        if self._reset_range is not None:
            link.budget = self.rng.randint(*self._reset_range)
        self.links.add(link)
        try:
            await self._flowing.wait()  # a blackholed route never reaches the server
            up_reader, link.server = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except (OSError, asyncio.CancelledError):
            self._drop(link, rst=False)
            return
        link.tasks = [
            asyncio.create_task(self._pump(link, reader, link.server, upstream=True)),
            asyncio.create_task(self._pump(link, up_reader, writer, upstream=False)),
        ]

    async def _pump(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        upstream: bool,
    ) -> None:
        try:
            while not link.closed:
                await self._flowing.wait()
                rate = None if upstream else self._rate
                data = await reader.read(max(1, int(rate / 10)) if rate else CHUNK)
                await self._flowing.wait()  # hold what was read while blackholed
                if link.closed:
                    return
                if not data:
                    link.eofs += 1
                    if link.eofs == 2:
                        self._drop(link, rst=False)
                    elif writer.can_write_eof():
                        writer.write_eof()
                    return
                if link.budget is not None:
                    if len(data) >= link.budget:
                        writer.write(data[: link.budget])
                        with contextlib.suppress(OSError, ConnectionError):
                            await writer.drain()
                        self.resets += 1
                        self._drop(link, rst=True)
                        return
                    link.budget -= len(data)
                writer.write(data)
                await writer.drain()
                if rate:
                    await asyncio.sleep(len(data) / rate)
        except (OSError, ConnectionError):
            self._drop(link, rst=True)
        except asyncio.CancelledError:
            pass

    def _drop(self, link: _Link, *, rst: bool) -> None:
        if link.closed:
            return
        link.closed = True
        self.links.discard(link)
        for writer in (link.client, link.server):
            if writer is None:
                continue
            if rst:
                _rst(writer)
            else:
                writer.close()
        current = asyncio.current_task()
        for task in link.tasks:
            if task is not current:
                task.cancel()
