"""A live MJPEG camera stand-in for the live-source tests: a server in its own process (so a test
can kill and restart it), streaming a shifting image at a fixed frame rate on 127.0.0.1."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

SERVER = r"""
import sys, time, cv2, numpy as np
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
img = cv2.resize(cv2.imread(sys.argv[2]), (320, 240))
fps, shift = float(sys.argv[3]), int(sys.argv[4])
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        self.send_response(200)
        self.send_header('Content-Type', 'multipart/x-mixed-replace; boundary=frame')
        self.end_headers()
        i = 0
        try:
            while True:
                ok, b = cv2.imencode('.jpg', np.roll(img, shift * i, axis=1)); i += 1
                self.wfile.write(b'--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n' % len(b) + b.tobytes() + b'\r\n')
                time.sleep(1.0 / fps)
        except (BrokenPipeError, ConnectionResetError):
            pass
s = ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), H)
s.daemon_threads = True
print('ready', flush=True)
s.serve_forever()
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mjpeg_server(port: int, image: Path, fps: float = 30.0, shift: int = 4) -> subprocess.Popen:
    """Start the server and wait until it listens; the caller kills it (``p.kill(); p.wait()``)."""
    p = subprocess.Popen([sys.executable, "-c", SERVER, str(port), str(image), str(fps), str(shift)],
                         stdout=subprocess.PIPE, text=True)
    if p.stdout is None or p.stdout.readline().strip() != "ready":
        p.kill()
        raise RuntimeError("the MJPEG test server did not start")
    return p


def wait_for(cond: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll ``cond`` until it is true (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True
