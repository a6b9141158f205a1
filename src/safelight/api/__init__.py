"""The HTTP/WebSocket/SSE API (API.md) and the pages."""
