"""A loopback HTTP/1.1 proxy that puts faults between the pipeline and the S3 server.

Each request gets the action ``plan(n, method, target)`` (n counts requests from 0): ``pass``
forwards it, ``slowdown`` answers 503 SlowDown (as S3 does when throttling), ``reset`` drops the
connection with a TCP reset before forwarding, ``slow`` forwards it after a delay, ``lost`` forwards
it and then resets the connection instead of answering (the request took effect; the client cannot
know), ``denied`` answers 403 AccessDenied (as S3 does for an object whose ACL or KMS key the reader
lacks). Bound to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

SLOWDOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
DENIED_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>'
)
NO_BODY_STATUS = (b"1", b"204", b"304")
Plan = Callable[[int, str, str], str]
"""The action for request n, of a method and target (path and query)."""


class _Reader:
    """Buffered reads of HTTP framing from a socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buffer = sock, b""

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            if not self._fill():
                return b""
        head, self.buffer = self.buffer.split(marker, 1)
        return head + marker

    def exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise ConnectionError("peer closed mid-body")
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def chunked(self) -> bytes:
        """A chunked body with its framing, as received (trailers included)."""
        out = b""
        while True:
            line = self.until(b"\r\n")
            out += line
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:
                    trailer = self.until(b"\r\n")
                    out += trailer
                    if trailer == b"\r\n":
                        return out
            out += self.exactly(size + 2)

    def rest(self) -> bytes:
        while self._fill():
            pass
        data, self.buffer = self.buffer, b""
        return data


def headers_of(head: bytes) -> dict[bytes, bytes]:
    lines = head.split(b"\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines if b":" in line)}


def read_body(reader: _Reader, headers: dict[bytes, bytes], until_close: bool) -> bytes:
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        return reader.chunked()
    if b"content-length" in headers:
        return reader.exactly(int(headers[b"content-length"]))
    return reader.rest() if until_close else b""


class FaultProxy:
    """Serve ``127.0.0.1:<port>`` -> ``127.0.0.1:<upstream_port>`` with faults by ``plan``."""

    def __init__(self, upstream_port: int, plan: Plan, delay: float = 1.5) -> None:
        self.upstream_port, self.plan, self.delay = upstream_port, plan, delay
        self.actions: Counter[str] = Counter()
        self._count = 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._closing = False
        self.responses: list[tuple[str, str, int]] = []  # (method, target, status) of every forwarded request
        self.faulted: list[tuple[str, str]] = []  # (method, target) of every request not simply passed

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        threading.Thread(target=self._accept, daemon=True, name="fault-proxy").start()
        return self

    def close(self) -> None:
        self._closing = True
        self._server.close()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _next_action(self, method: str, target: str) -> str:
        with self._lock:
            action = self.plan(self._count, method, target)
            self._count += 1
            self.actions[action] += 1
            if action != "pass":
                self.faulted.append((method, target))
            return action

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        reader = _Reader(client)
        try:
            while True:
                head = reader.until(b"\r\n\r\n")
                if not head:
                    return
                headers = headers_of(head)
                if headers.get(b"expect", b"").lower() == b"100-continue":
                    client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")  # we read the body, then forward it whole
                    head = b"\r\n".join(line for line in head.split(b"\r\n") if not line.lower().startswith(b"expect:"))
                body = read_body(reader, headers, until_close=False)
                method, target = (part.decode() for part in head.split(b" ", 2)[:2])
                action = self._next_action(method, target)
                if action == "reset":
                    _reset(client)
                    return
                if action == "slowdown":
                    client.sendall(
                        b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(SLOWDOWN_BODY), SLOWDOWN_BODY)
                    )
                    return
                if action == "denied":
                    body = b"" if method == "HEAD" else DENIED_BODY  # a HEAD answer has no body
                    client.sendall(
                        b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                    )
                    continue
                if action == "slow":
                    time.sleep(self.delay)
                if upstream is None:
                    upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
                upstream.sendall(head + body)
                keep, status = self._relay_response(_Reader(upstream), client, method.encode(), action == "lost")
                with self._lock:
                    self.responses.append((method, target, status))
                if action == "lost":
                    _reset(client)
                    return
                if not keep:
                    return
        except (OSError, ConnectionError, ValueError):
            return
        finally:
            client.close()
            if upstream is not None:
                upstream.close()

    @staticmethod
    def _relay_response(upstream: _Reader, client: socket.socket, method: bytes, drop: bool) -> tuple[bool, int]:
        """Copy one response (read it only, if ``drop``); whether the connection may stay open after
        it, and the status code."""
        head = upstream.until(b"\r\n\r\n")
        if not head:
            return False, 0
        status = head.split(b" ", 2)[1]
        headers = headers_of(head)
        keep = headers.get(b"connection", b"").lower() != b"close"
        body = (
            b""
            if method == b"HEAD" or status.startswith(NO_BODY_STATUS)
            else read_body(upstream, headers, until_close=not keep)
        )
        if not drop:
            client.sendall(head + body)
        return keep and (
            b"content-length" in headers or b"chunked" in headers.get(b"transfer-encoding", b"") or not body
        ), int(status)


def _reset(client: socket.socket) -> None:
    """Close ``client``'s connection with a TCP reset."""
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def every(pattern: dict[int, str], period: int) -> Plan:
    """A plan: request n gets ``pattern[n % period]``, else ``pass``."""
    return lambda n, _method, _target: pattern.get(n % period, "pass")


def first_try(action: str) -> Plan:
    """A plan: the first request of each method and path (its query left out) gets ``action``; its
    retries, and every later request to the same path, pass."""
    seen: set[tuple[str, str]] = set()

    def plan(_n: int, method: str, target: str) -> str:
        key = (method, target.split("?", 1)[0])
        if key in seen:
            return "pass"
        seen.add(key)
        return action

    return plan


def run_in_process(upstream_port: int, record: Path) -> tuple[subprocess.Popen, str]:
    """A passing proxy in a process of its own (delta-rs may hold this process's threads while it waits);
    it writes every (method, target, status) to ``record`` as JSON when terminated. Its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fault_proxy", str(upstream_port), str(record)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.stdout is not None
    return proc, f"http://127.0.0.1:{int(proc.stdout.readline())}"


if __name__ == "__main__":
    proxy = FaultProxy(int(sys.argv[1]), lambda *_: "pass").start()
    print(proxy.port, flush=True)

    def dump(*_: object) -> None:
        Path(sys.argv[2]).write_text(json.dumps(proxy.responses))
        sys.exit(0)

    signal.signal(signal.SIGTERM, dump)
    while True:
        signal.pause()
