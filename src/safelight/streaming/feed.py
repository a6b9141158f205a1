"""A job's feed: everyone following one job on this process.

The live streams, per wire, are written directly in ``publish`` (one message per wire per
event, shared by all of them; ``Stream.live_event`` does the per-client step); the ones
catching up get the event queued (streaming/follow.py).  A terminal event is written to
every live stream first; each is ended a little later (``Broadcaster.end_delay_s``).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from safelight.models import Event
from safelight.streaming.follow import Stream, StreamState
from safelight.streaming.writes import Message, Wire

if TYPE_CHECKING:
    from safelight.streaming.broadcaster import Broadcaster


class Feed:
    """Everyone following one job on this process: the live streams per wire (written
    directly, in ``publish``), the ones catching up (queued)."""

    __slots__ = ("broadcaster", "catching", "idle_ticks", "job_id", "last_seq", "live")

    def __init__(self, broadcaster: Broadcaster, job_id: str) -> None:
        self.broadcaster = broadcaster
        self.job_id = job_id
        self.live: dict[Wire, dict[Stream, None]] = {}
        self.catching: set[Stream] = set()
        self.last_seq = 0  # the highest seq published to it (0: none yet)
        self.idle_ticks = 0

    def __len__(self) -> int:
        return len(self.catching) + sum(len(s) for s in self.live.values())

    def join(self, stream: Stream) -> None:
        self.catching.discard(stream)
        self.live.setdefault(stream.wire, {})[stream] = None
        stream.state = StreamState.LIVE

    def leave(self, stream: Stream) -> None:
        """Live -> catching up."""
        streams = self.live.get(stream.wire)
        if streams is not None:
            streams.pop(stream, None)
        self.catching.add(stream)

    def remove(self, stream: Stream) -> None:
        self.catching.discard(stream)
        streams = self.live.get(stream.wire)
        if streams is not None:
            streams.pop(stream, None)
        if not len(self):
            self.broadcaster.drop_feed(self)

    def publish(self, event: Event) -> None:
        if event.seq > self.last_seq:
            self.last_seq = event.seq
        self.idle_ticks = 0
        for stream in tuple(self.catching):
            stream.offer(event)
        terminal = event.terminal
        for wire, streams in tuple(self.live.items()):
            if not streams:
                continue
            message = wire.event(event)  # encoded once for every client on this wire
            written = 0
            for stream in tuple(streams):
                if stream.live_event(event, message, terminal):
                    written += 1
            if written:
                self.broadcaster.delivered(wire, event, written)
        if terminal:
            # Every client gets the terminal event before any connection is ended, and
            # the ends wait ``end_delay_s``: ending a connection costs more than a frame,
            # and ending them in the same pass made the last clients' `completed` wait
            # behind hundreds of closes (docs/benchmarks.md, step 13).
            delay = self.broadcaster.end_delay_s
            if delay > 0:
                asyncio.get_running_loop().call_later(delay, self.end_live, event.seq)
            else:
                self.end_live(event.seq)

    def end_live(self, terminal_seq: int) -> None:
        """End every live stream that was sent the terminal event ``terminal_seq``."""
        for streams in tuple(self.live.values()):
            for stream in tuple(streams):
                stream.end_after(terminal_seq)

    def ping(self) -> None:
        """Keep-alive for the live streams (the catching-up ones are writing)."""
        for wire, streams in tuple(self.live.items()):
            messages: dict[int, Message] = {}
            for stream in tuple(streams):
                message = messages.get(stream.last_sent)
                if message is None:
                    message = messages[stream.last_sent] = wire.ping(stream.last_sent)
                stream.push(message)

    def streams(self) -> list[Stream]:
        return [*self.catching, *(s for streams in self.live.values() for s in streams)]
