"""The sync iterator: a private loop thread, and Ctrl-C that loses nothing."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from safelight.client._sync import SyncEventStream

from .fakes import FAST, FakeClient, FakeLog


def make(log: FakeLog) -> SyncEventStream:
    return SyncEventStream(
        lambda: FakeClient(log),  # type: ignore[arg-type, return-value]
        log.job_id,
        after=0,
        transport=None,
        settings=FAST,
    )


def test_iterates_and_reports_the_transport() -> None:
    log = FakeLog()
    log.run(steps=2)
    with make(log) as stream:
        events = list(stream)
        assert stream.state == "done"
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert all(e.transport == "ws" for e in events)


def test_keyboard_interrupt_keeps_the_read_going() -> None:
    log = FakeLog()
    log.add("queued")
    stream = make(log)
    try:
        assert next(stream).seq == 1
        assert stream.transport == "ws"
        timer = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            next(stream)  # nothing to read yet: waits until the interrupt
        timer.join()
        stream._thread.run(log.publish("running"))
        stream._thread.run(log.publish("completed"))
        assert [e.seq for e in stream] == [2, 3]
    finally:
        stream.close()


def test_close_midway_stops_the_thread() -> None:
    log = FakeLog()
    log.add("queued")
    stream = make(log)
    assert next(stream).seq == 1
    stream.close()
    stream.close()
    assert list(stream) == []
    assert stream._thread.loop.is_closed()
