"""The Safelight Python client: create jobs and follow them live, losslessly.

    from safelight.client import Client

    with Client("http://127.0.0.1:8000") as client:
        job = client.create("a lighthouse at dusk", steps=20)
        with client.events(job.id) as stream:
            for event in stream:
                print(event.seq, event.type, event.transport)
        paths = client.download(job.id, "out/")

``AsyncClient`` is the same over asyncio.  Events come through the same transport ladder
as the browser's (WebSocket -> SSE -> polling, reconnecting with backoff, deduplicated by
``seq``); errors are the ``safelight.errors`` classes.  This package never imports server
code.  Usage and the command line: docs/client.md.
"""

from safelight.client._sync import SyncEventStream
from safelight.client.clients import (
    DEFAULT_SERVER,
    AsyncClient,
    Client,
    MemoryTokens,
    TokenKeeper,
)
from safelight.client.errors import ConnectionFailed, TransportRefused, UnexpectedResponse
from safelight.client.models import (
    Event,
    EventPage,
    Image,
    Job,
    JobError,
    JobSettings,
    Preview,
    Progress,
    QueueInfo,
)
from safelight.client.stream import EventStream, StreamSettings
from safelight.client.tokens import TokenStore

__all__ = [
    "DEFAULT_SERVER",
    "AsyncClient",
    "Client",
    "ConnectionFailed",
    "Event",
    "EventPage",
    "EventStream",
    "Image",
    "Job",
    "JobError",
    "JobSettings",
    "MemoryTokens",
    "Preview",
    "Progress",
    "QueueInfo",
    "StreamSettings",
    "SyncEventStream",
    "TokenKeeper",
    "TokenStore",
    "TransportRefused",
    "UnexpectedResponse",
]
