"""Preview server limits, with real sockets on 127.0.0.1: idle connections time out, a connection
cap answers 503, and a burst of connects larger than socketserver's default backlog is not reset."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from edgeseg.errors import InputError
from edgeseg.live.server import PreviewServer


def _connect(port: int, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def _get(port: int, path: str = "/stats.json", timeout: float = 5.0) -> bytes:
    with _connect(port, timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk


@pytest.fixture
def server():
    servers = []

    def start(**kw):
        srv = PreviewServer("127.0.0.1", 0, **kw).start()
        servers.append(srv)
        srv.publish(b"\xff\xd8fake\xff\xd9", {"frame": 1})
        return srv

    yield start
    for srv in servers:
        srv.close()


def test_idle_connection_is_dropped_after_the_timeout(server):
    srv = server(timeout=0.5)
    s = _connect(srv.port, timeout=10)
    t = time.monotonic()
    assert s.recv(1) == b""  # closed by the server, not held for ever
    assert time.monotonic() - t < 5
    s.close()
    deadline = time.monotonic() + 5
    while srv.connections and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.connections == 0


def test_connection_cap_answers_503_and_frees_up(server):
    srv = server(timeout=30, max_connections=4)
    idle = [_connect(srv.port) for _ in range(4)]
    deadline = time.monotonic() + 5
    while srv.connections < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    reply = _get(srv.port)
    assert reply.startswith(b"HTTP/1.1 503 ") and b"too many connections (4 open" in reply and b"Retry-After: 5" in reply
    idle.pop().close()
    for _ in range(100):  # the freed slot is served again
        reply = _get(srv.port)
        if reply.startswith(b"HTTP/1.1 200"):
            break
        time.sleep(0.05)
    assert reply.startswith(b"HTTP/1.1 200") and b'"frame": 1' in reply
    for s in idle:
        s.close()


def test_a_burst_of_200_clients_is_served_or_refused_never_reset(server):
    srv = server(timeout=5, max_connections=16)
    results, errors = [], []

    def client():
        try:
            results.append(_get(srv.port, timeout=20).split(b" ", 2)[1])
        except OSError as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=client) for _ in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors[:3]
    assert len(results) == 200 and set(results) <= {b"200", b"503"} and b"200" in results
    assert srv._server.request_queue_size == 128  # listen backlog (socketserver default: 5)


def test_a_live_mjpeg_viewer_keeps_streaming_past_the_timeout(server):
    srv = server(timeout=1.0)
    with _connect(srv.port) as s:
        s.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        for i in range(5):  # frames published more often than the timeout: the stream stays open
            srv.publish(b"\xff\xd8frame%d\xff\xd9" % i, {"frame": i})
            time.sleep(0.3)
        deadline = time.monotonic() + 5
        while b"frame4" not in got and time.monotonic() < deadline:
            got += s.recv(65536)
        assert b"frame4" in got


@pytest.mark.parametrize("kw", [{"timeout": 0}, {"max_connections": 0}, {"backlog": -1}])
def test_limits_are_validated(kw):
    with pytest.raises(InputError):
        PreviewServer("127.0.0.1", 0, **kw)
