"""``edgeseg run --serve`` watched in a real headless Chromium (Debian ``chromium``).

The browser is driven over the DevTools protocol with a minimal stdlib websocket client (below), so
the test needs no extra Python package. The page must load, its MJPEG <img> must show changing
frames, and its stats must update; a screenshot is saved to ``tests/artifacts/serve_page.png``.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from _mjpeg import free_port, start_mjpeg_server

cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
MODEL = ASSETS / "models" / "yolov8n-seg-320-int8dyn.onnx"
BUS = ASSETS / "images" / "bus.jpg"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
EDGESEG = [sys.executable, "-c", "from edgeseg.cli import main; main(prog_name='edgeseg')"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

pytestmark = [
    pytest.mark.skipif(not (MODEL.is_file() and BUS.is_file()), reason=f"test assets not found under {ASSETS}"),
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium; `make test` installs it)"),
]


# -- a minimal websocket client for the DevTools protocol ------------------------------------------

class DevTools:
    """Just enough RFC 6455 for CDP: masked text frames out, (possibly fragmented) frames in."""

    def __init__(self, ws_url: str, timeout: float = 30.0) -> None:
        assert ws_url.startswith("ws://")
        hostport, _, path = ws_url[5:].partition("/")
        host, port = hostport.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("DevTools closed the websocket handshake")
            head += chunk
        assert b" 101 " in head.split(b"\r\n", 1)[0], head
        self._id = 0

    def _recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("DevTools websocket closed")
            buf += chunk
        return buf

    def _send(self, text: str) -> None:
        data = text.encode()
        header = bytearray([0x81])
        n = len(data)
        if n < 126:
            header.append(0x80 | n)
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        self.sock.sendall(bytes(header) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _recv(self) -> str:
        parts: List[bytes] = []
        while True:
            b0, b1 = self._recv_exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._recv_exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._recv_exact(8))[0]
            payload = self._recv_exact(n)
            if b0 & 0x0F in (0x9, 0xA):  # ping/pong: ignore
                continue
            parts.append(payload)
            if b0 & 0x80:
                return b"".join(parts).decode()

    def call(self, method: str, **params: Any) -> Dict[str, Any]:
        self._id += 1
        self._send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self._recv())
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def eval(self, expression: str) -> Any:
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def close(self) -> None:
        self.sock.close()





def http_get(url: str, headers: Optional[Dict[str, str]] = None, timeout: float = 10.0) -> urllib.request.addinfourl:
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout)


def wait_until(fn, timeout: float, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out; last value {last!r}")


@pytest.fixture()
def live_run(tmp_path: Path):
    """``edgeseg run --serve`` on a live MJPEG source; yields (page url, port, token)."""
    src_port, serve_port, token = free_port(), free_port(), "s3cret-token"
    source = start_mjpeg_server(src_port, BUS, fps=20, shift=8)
    err = open(tmp_path / "run.stderr", "w")
    run = subprocess.Popen(EDGESEG + ["run", "-m", str(MODEL), "-s", f"http://127.0.0.1:{src_port}/v.mjpg",
                                      "--serve", f"127.0.0.1:{serve_port}", "--token", token, "-q"],
                           stdout=subprocess.DEVNULL, stderr=err)
    try:
        base = f"http://127.0.0.1:{serve_port}"
        wait_until(lambda: json.load(http_get(f"{base}/stats.json?token={token}")).get("seq", 0) > 2, 120)
        yield base, token
    finally:
        run.send_signal(signal.SIGTERM)
        try:
            run.wait(timeout=30)
        except subprocess.TimeoutExpired:
            run.kill()
        source.kill()
        source.wait()
        err.close()
    stderr = (tmp_path / "run.stderr").read_text()
    assert run.returncode == 0, stderr
    assert f"live view at {base}/?token={token}" in stderr


def test_token_is_required(live_run) -> None:
    base, token = live_run
    for url, headers in [(f"{base}/", {}), (f"{base}/stats.json?token=wrong", {}), (f"{base}/frame.jpg", {})]:
        with pytest.raises(urllib.error.HTTPError) as exc:
            http_get(url, headers)
        assert exc.value.code == 401
    assert http_get(f"{base}/stats.json", {"Authorization": f"Bearer {token}"}).status == 200
    assert http_get(f"{base}/stats.json", {"X-Edgeseg-Token": token}).status == 200
    jpeg = http_get(f"{base}/frame.jpg?token={token}").read()
    img = cv2.imdecode(__import__("numpy").frombuffer(jpeg, "uint8"), cv2.IMREAD_COLOR)
    assert img is not None and img.shape == (240, 320, 3)
    stats = json.load(http_get(f"{base}/stats.json?token={token}"))
    assert stats["ms"]["inference"] > 0 and "frame_age" in stats["ms"]
    assert stats["image_size"] == [240, 320]  # [h, w]


def test_page_in_headless_chromium(live_run, tmp_path: Path) -> None:
    base, token = live_run
    profile = tempfile.mkdtemp(prefix="edgeseg-chromium-")
    browser = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--remote-debugging-port=0",
         "--window-size=1200,800", f"{base}/?token={token}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cdp = None
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        port = int(wait_until(lambda: port_file.is_file() and port_file.read_text().split("\n")[0].strip(), 60))

        def page_ws() -> Optional[str]:
            pages = json.load(http_get(f"http://127.0.0.1:{port}/json/list"))
            return next((p["webSocketDebuggerUrl"] for p in pages
                         if p.get("type") == "page" and p.get("url", "").startswith(base)), None)

        cdp = DevTools(wait_until(page_ws, 60))
        # the page loads (the target is listed before navigation ends: wait for our page's title)
        assert wait_until(lambda: cdp.eval("document.title") == "edgeseg live", 60)
        # the MJPEG <img> decodes frames: it has the stream's size (the annotated 320x240 view)
        size = wait_until(lambda: cdp.eval("[document.getElementById('stream').naturalWidth,"
                                           " document.getElementById('stream').naturalHeight]")
                          if cdp.eval("document.getElementById('stream').naturalWidth") > 0 else None, 60)
        assert size == [320, 240]
        # ... and the frames change: sample the displayed image twice through a canvas
        sample = ("(() => { const i = document.getElementById('stream'); const c = document.createElement('canvas');"
                  " c.width = 64; c.height = 48; const g = c.getContext('2d'); g.drawImage(i, 0, 0, 64, 48);"
                  " const d = g.getImageData(0, 0, 64, 48).data; let s = 0;"
                  " for (let k = 0; k < d.length; k += 4) s += d[k] * (k % 97 + 1) + d[k + 1]; return s; })()")
        first = cdp.eval(sample)
        assert first > 0
        assert wait_until(lambda: cdp.eval(sample) != first, 30)
        # the stats poll updates the numbers
        u0 = int(wait_until(lambda: cdp.eval("document.body.dataset.updates"), 30))
        seq0 = int(cdp.eval("document.body.dataset.seq"))
        wait_until(lambda: int(cdp.eval("document.body.dataset.updates")) >= u0 + 3
                   and int(cdp.eval("document.body.dataset.seq")) > seq0, 30)
        assert cdp.eval("document.getElementById('state').textContent") == "live"
        assert float(cdp.eval("document.getElementById('fps').textContent")) > 0
        stages = cdp.eval("[...document.querySelectorAll('#stages td:first-child')].map(t => t.textContent)")
        assert {"preprocess", "inference", "postprocess"} <= set(stages), stages
        dets = cdp.eval("[...document.querySelectorAll('#dets td:first-child')].map(t => t.textContent)")
        assert "bus" in dets, dets  # the real model finds the bus in the streamed photo
        shot = base64.b64decode(cdp.call("Page.captureScreenshot", format="png")["data"])
        ARTIFACTS.mkdir(exist_ok=True)
        out = ARTIFACTS / "serve_page.png"
        out.write_bytes(shot)
        png = cv2.imread(str(out))
        assert png is not None and png.shape[0] >= 400 and png.shape[1] >= 600
        print(f"screenshot of the live page: {out}")
    finally:
        if cdp is not None:
            cdp.close()
        browser.terminate()
        try:
            browser.wait(timeout=20)
        except subprocess.TimeoutExpired:
            browser.kill()
        shutil.rmtree(profile, ignore_errors=True)
