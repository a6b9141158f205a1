from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    # websockets' client is asyncio-only, so the client is too.
    return "asyncio"
