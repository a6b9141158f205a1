"""Live fan-out of job events and the three transports (WebSocket, SSE, polling)."""
