"""HTTP/1.1 over a plain socket, for requests a normal client would "fix": raw paths
(``/../``, ``%2e``, NUL), hostile Host headers, WebSocket handshakes we only want the
status of.  The server is always a real one on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import os
import socket
from dataclasses import dataclass
from typing import Any


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _read_response(sock: socket.socket) -> RawResponse:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if status == 101:
        return RawResponse(status, headers, b"")
    length = headers.get("content-length")
    if length is not None:
        while len(body) < int(length):
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while not body.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        body = _dechunk(body)
    return RawResponse(status, headers, body)


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out


def request(
    port: int,
    method: str,
    target: bytes | str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    timeout: float = 10.0,
) -> RawResponse:
    """Send ``METHOD target HTTP/1.1`` exactly as given (no normalisation)."""
    raw_target = target.encode("latin-1") if isinstance(target, str) else target
    all_headers = {"Host": f"127.0.0.1:{port}", "Connection": "close", **(headers or {})}
    if body or method in ("POST", "PUT"):
        all_headers.setdefault("Content-Length", str(len(body)))
    head = method.encode() + b" " + raw_target + b" HTTP/1.1\r\n"
    head += b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in all_headers.items())
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head + b"\r\n" + body)
        return _read_response(sock)


def ws_handshake(port: int, path: str, headers: dict[str, str] | None = None) -> RawResponse:
    """A WebSocket upgrade request; the answer is 101 (accepted) or an HTTP error."""
    key = base64.b64encode(os.urandom(16)).decode()
    return request(
        port,
        "GET",
        path,
        {
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": key,
            "Sec-WebSocket-Version": "13",
            **(headers or {}),
        },
    )
