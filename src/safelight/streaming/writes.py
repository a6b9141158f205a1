"""Writing one ASGI message without a task per write.

The job's writer (``streaming.follow.Feed``) writes each event to every caught-up client
from its own call stack.  An ASGI ``send`` is a coroutine, but uvicorn's only awaits when
the socket's write buffer is over its high-water mark (flow control): otherwise it runs to
the end at its first step.  ``write_now`` takes that first step by hand; when the send
does suspend, the caller gets the suspended coroutine back and finishes it in a task of
its own with ``finish`` (what Python 3.12 calls an *eager* start; this is 3.11).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from typing import Any, Protocol

from safelight.models import Event
from safelight.types import Transport

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]
Receive = Callable[[], Awaitable[Message]]


class Wire(Protocol):
    """How one transport frames what the writer sends (api/streams.py has the two).  The
    messages are built once per event and shared by every client on that wire."""

    transport: Transport

    def event(self, event: Event) -> Message: ...

    def ping(self, last_seq: int) -> Message: ...

    def end(self) -> Message:
        """The normal end, after the terminal event."""
        ...

    def slow(self) -> Message:
        """The end for a client that did not keep up (it resumes from its cursor)."""
        ...


class Pending:
    """A send that suspended at its first step: the coroutine and what it waits on."""

    __slots__ = ("coro", "waiting_on")

    def __init__(self, coro: Coroutine[Any, Any, None], waiting_on: object) -> None:
        self.coro = coro
        self.waiting_on = waiting_on

    async def finish(self) -> None:
        """Drive the send to its end from the calling task (as a Task's step would)."""
        coro, waiting_on = self.coro, self.waiting_on
        try:
            while True:
                if isinstance(waiting_on, asyncio.Future):
                    waiting_on._asyncio_future_blocking = False
                    # asyncio.wait: the future's own error surfaces inside the send.
                    await asyncio.wait((waiting_on,))
                else:  # a bare ``yield`` (asyncio.sleep(0)): just give the loop a turn
                    await asyncio.sleep(0)
                waiting_on = coro.send(None)
        except StopIteration:
            return
        except BaseException:
            coro.close()
            raise

    def cancel(self) -> None:
        self.coro.close()


def write_now(send: Send, message: Message) -> Pending | None:
    """Start ``send(message)`` and run it as far as it goes without waiting.  ``None``: it
    completed.  A ``Pending``: it is waiting (a paused socket) and must be finished with
    ``Pending.finish()`` before anything else is written to that client.  An exception:
    the send failed (the client is gone)."""
    coro = send(message)
    if not isinstance(coro, Coroutine):  # a plain awaitable: nothing to step by hand
        return Pending(_await(coro), None)
    try:
        waiting_on = coro.send(None)
    except StopIteration:
        return None
    return Pending(coro, waiting_on)


async def _await(awaitable: Awaitable[None]) -> None:
    await awaitable
