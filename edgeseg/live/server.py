"""A small built-in HTTP server for watching a headless board: ``edgeseg run --serve 8080``.

Standard library only (:class:`http.server.ThreadingHTTPServer` in a daemon thread). Routes:

==================  ===============================================================================
``/``               the page: live annotated view plus stats (FPS, per-stage ms, frame age, detections)
``/stream.mjpg``    MJPEG stream (``multipart/x-mixed-replace``); each client gets the newest frame
``/frame.jpg``      the newest annotated frame as one JPEG
``/stats.json``     the newest stats (the page polls it twice a second)
==================  ===============================================================================

It binds to 127.0.0.1 unless told otherwise (reach it over SSH with ``ssh -L 8080:localhost:8080
board``). With ``token`` set, every route needs it as ``?token=...``, an ``X-Edgeseg-Token`` header
or ``Authorization: Bearer ...``; the page passes the token it was opened with on to its requests.

Limits (a headless board must survive idle, slow or too many clients): every socket operation of
a connection times out after ``timeout`` seconds (default 10: an idle or stalled client is
dropped, a live MJPEG viewer is not), at most ``max_connections`` connections are served at once
(default 32; one more gets ``503 Service Unavailable`` with ``Retry-After`` and is closed at once),
and the listen backlog is ``backlog`` (default 128) so a burst of connects is not reset.
"""
from __future__ import annotations

import hmac
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

from ..errors import InputError

__all__ = ["PreviewServer", "parse_bind", "PAGE"]

log = logging.getLogger("edgeseg.live.server")

_BOUNDARY = "edgesegframe"


def parse_bind(value: str) -> Tuple[str, int]:
    """``"8080"`` -> ("127.0.0.1", 8080); ``"0.0.0.0:8080"``; ``"[::1]:8080"``. Port 0 picks a free port."""
    v = str(value).strip()
    host = "127.0.0.1"
    port_s = v
    if v.startswith("["):
        end = v.find("]")
        if end < 0 or not v[end + 1:].startswith(":"):
            raise InputError(f"--serve {value!r}: expected [IPv6]:PORT, e.g. [::1]:8080")
        host, port_s = v[1:end], v[end + 2:]
    elif ":" in v:
        host, port_s = v.rsplit(":", 1)
        host = host or "127.0.0.1"
    try:
        port = int(port_s)
    except ValueError:
        raise InputError(f"--serve {value!r}: expected [HOST:]PORT such as 8080 or 0.0.0.0:8080") from None
    if not 0 <= port <= 65535:
        raise InputError(f"--serve {value!r}: port must be 0-65535, got {port}")
    return host, port


#: defaults of :class:`PreviewServer`'s limits
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_CONNECTIONS = 32
DEFAULT_BACKLOG = 128


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = DEFAULT_BACKLOG  # listen() backlog (socketserver's default is 5)
    preview: "PreviewServer"
    max_connections = DEFAULT_MAX_CONNECTIONS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._active = 0
        self._active_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    @property
    def active(self) -> int:
        """Connections being served now."""
        return self._active

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._active_lock:
            full = self._active >= self.max_connections
            if not full:
                self._active += 1
        if full:
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def _release(self) -> None:
        with self._active_lock:
            self._active -= 1

    def _refuse(self, request: Any) -> None:
        body = (f"edgeseg: too many connections ({self.max_connections} open, the limit of this preview); "
                "try again in a few seconds\n").encode()
        head = ("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\nRetry-After: 5\r\nConnection: close\r\n\r\n").encode()
        try:
            request.settimeout(1.0)
            request.sendall(head + body)
        except OSError:
            pass
        self.shutdown_request(request)


class PreviewServer:
    """Serves the newest JPEG frame and stats published with :meth:`publish`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, token: Optional[str] = None,
                 source_name: str = "", timeout: float = DEFAULT_TIMEOUT_S,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS, backlog: int = DEFAULT_BACKLOG) -> None:
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise InputError(f"preview server timeout must be a positive number of seconds, got {timeout!r}")
        for what, v in (("max_connections", max_connections), ("backlog", backlog)):
            if not (isinstance(v, int) and v >= 1):
                raise InputError(f"preview server {what} must be a positive integer, got {v!r}")
        self.timeout = float(timeout)
        self.max_connections = max_connections
        self.backlog = backlog
        self.host = host
        self.port = port
        self.token = token or None
        self.source_name = source_name
        self._cond = threading.Condition()
        self._jpeg: Optional[bytes] = None
        self._stats: Dict[str, Any] = {}
        self._seq = 0
        self._closing = False
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self.clients = 0

    def start(self) -> "PreviewServer":
        limits = {"request_queue_size": self.backlog, "max_connections": self.max_connections}
        cls = type("_Server", (_Server,), limits)
        if ":" in self.host:
            cls = type("_Server6", (cls,), {"address_family": socket.AF_INET6})
        handler = type("_Handler", (_Handler,), {"timeout": self.timeout})
        try:
            server = cls((self.host, self.port), handler)
        except OSError as exc:
            raise InputError(f"--serve {self.host}:{self.port}: cannot listen there ({exc.strerror or exc}); "
                             "pick another port, e.g. --serve 8081") from exc
        server.preview = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="edgeseg-serve", daemon=True)
        self._thread.start()
        if self.host not in ("127.0.0.1", "localhost", "::1") and not self.token:
            log.warning("serving on %s without --token: anyone who can reach this machine can watch", self.host)
        log.info("preview at %s", self.url)
        return self

    @property
    def url(self) -> str:
        host = self.host if self.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    def publish(self, jpeg: bytes, stats: Dict[str, Any]) -> None:
        """Make ``jpeg`` (one encoded frame) and ``stats`` (JSON-able dict) the newest."""
        with self._cond:
            self._seq += 1
            self._jpeg = jpeg
            self._stats = dict(stats, seq=self._seq, source=self.source_name, time=time.time())
            self._cond.notify_all()

    def wait_frame(self, after: int, timeout: float = 0.5) -> Tuple[int, Optional[bytes]]:
        """The newest (seq, jpeg) newer than ``after``; (after, None) on timeout or when closing."""
        with self._cond:
            if self._seq <= after and not self._closing:
                self._cond.wait(timeout)
            if self._seq > after and self._jpeg is not None:
                return self._seq, self._jpeg
            return after, None

    def snapshot(self) -> Tuple[Optional[bytes], Dict[str, Any]]:
        with self._cond:
            return self._jpeg, dict(self._stats)

    @property
    def connections(self) -> int:
        """Connections being served now (at most ``max_connections``)."""
        return self._server.active if self._server is not None else 0

    @property
    def closing(self) -> bool:
        return self._closing

    def check_token(self, query: str, headers: Any) -> bool:
        if not self.token:
            return True
        given = parse_qs(query).get("token", [None])[0] or headers.get("X-Edgeseg-Token")
        auth = headers.get("Authorization") or ""
        if not given and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return bool(given) and hmac.compare_digest(str(given).encode(), self.token.encode())

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5.0)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "edgeseg"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        preview = self.server.preview
        url = urlsplit(self.path)
        if not preview.check_token(url.query, self.headers):
            self._send(401, b"edgeseg: this preview needs ?token=... (the --token given to edgeseg run)\n",
                       "text/plain; charset=utf-8")
            return
        route = url.path.rstrip("/") or "/"
        try:
            if route in ("/", "/index.html"):
                self._send(200, PAGE.encode("utf-8"), "text/html; charset=utf-8")
            elif route == "/stats.json":
                _, stats = preview.snapshot()
                self._send(200, json.dumps(stats).encode(), "application/json")
            elif route == "/frame.jpg":
                jpeg, _ = preview.snapshot()
                if jpeg is None:
                    self._send(503, b"no frame yet\n", "text/plain; charset=utf-8")
                else:
                    self._send(200, jpeg, "image/jpeg")
            elif route == "/stream.mjpg":
                self._mjpeg(preview)
            else:
                self._send(404, b"not found: try / , /stream.mjpg, /frame.jpg or /stats.json\n",
                           "text/plain; charset=utf-8")
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, socket.timeout):
            self.close_connection = True  # a client that went away or stalled past the timeout

    def _mjpeg(self, preview: PreviewServer) -> None:
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={_BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if self.command == "HEAD":
            return
        preview.clients += 1
        seq = 0
        try:
            while not preview.closing:
                seq, jpeg = preview.wait_frame(seq)
                if jpeg is None:
                    continue
                self.wfile.write(
                    f"--{_BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
                    + jpeg + b"\r\n")
                self.wfile.flush()
        finally:
            preview.clients -= 1


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>edgeseg live</title>
<style>
 body{margin:0;font:14px system-ui,sans-serif;background:#111;color:#ddd;display:flex;flex-wrap:wrap}
 #view{flex:1 1 640px;min-width:320px;padding:8px}
 #view img{width:100%;height:auto;background:#000;display:block}
 #side{flex:0 0 300px;padding:8px 12px}
 h1{font-size:16px;margin:4px 0 10px} h2{font-size:13px;margin:14px 0 4px;color:#9ab}
 table{border-collapse:collapse;width:100%} td{padding:2px 4px;border-bottom:1px solid #222}
 td.v{text-align:right;font-variant-numeric:tabular-nums}
 #state{font-size:12px;color:#8c8} #state.bad{color:#e66}
</style></head>
<body>
<div id="view"><img id="stream" alt="live annotated view"></div>
<div id="side">
 <h1>edgeseg live <span id="state">connecting&hellip;</span></h1>
 <table>
  <tr><td>source</td><td class="v" id="source">-</td></tr>
  <tr><td>FPS</td><td class="v" id="fps">-</td></tr>
  <tr><td>frame</td><td class="v" id="frame">-</td></tr>
  <tr><td>frame age (ms)</td><td class="v" id="age">-</td></tr>
  <tr><td>detections</td><td class="v" id="ndet">-</td></tr>
 </table>
 <h2>stage ms</h2><table id="stages"></table>
 <h2>detections</h2><table id="dets"></table>
 <h2 id="counts-h" hidden>counts</h2><table id="counts"></table>
</div>
<script>
const token = new URLSearchParams(location.search).get('token');
const q = token ? ('?token=' + encodeURIComponent(token)) : '';
const img = document.getElementById('stream');
img.src = 'stream.mjpg' + q;
img.onerror = () => setTimeout(() => { img.src = 'stream.mjpg' + q + (q ? '&' : '?') + 't=' + Date.now(); }, 1000);
let updates = 0;
function cell(t, cls) { const td = document.createElement('td'); td.textContent = t; if (cls) td.className = cls; return td; }
function rows(id, pairs) {
  const tb = document.getElementById(id); tb.replaceChildren();
  for (const [k, v] of pairs) { const tr = document.createElement('tr'); tr.append(cell(k), cell(v, 'v')); tb.append(tr); }
}
async function poll() {
  const st = document.getElementById('state');
  try {
    const r = await fetch('stats.json' + q, {cache: 'no-store'});
    if (!r.ok) throw new Error('HTTP ' + r.status);
    const s = await r.json();
    if (s.seq !== undefined) {
      updates += 1;
      document.body.dataset.updates = updates;
      document.body.dataset.seq = s.seq;
      document.getElementById('source').textContent = s.source || '-';
      document.getElementById('fps').textContent = (s.fps || 0).toFixed(1);
      document.getElementById('frame').textContent = s.frame;
      document.getElementById('age').textContent = s.ms && s.ms.frame_age !== undefined ? s.ms.frame_age.toFixed(0) : '-';
      document.getElementById('ndet').textContent = (s.detections || []).length;
      rows('stages', Object.entries(s.ms || {}).filter(([k]) => k !== 'frame_age').map(([k, v]) => [k, v.toFixed(1)]));
      rows('dets', (s.detections || []).map(d => [(d.track_id >= 0 ? '#' + d.track_id + ' ' : '') + d.class_name, d.score.toFixed(2)]));
      const a = s.analytics || {lines: {}, zones: {}};
      document.getElementById('counts-h').hidden = !s.analytics;
      rows('counts', Object.entries(a.lines).map(([k, v]) => [k, 'in ' + v.in + ' / out ' + v.out])
        .concat(Object.entries(a.zones).map(([k, v]) => [k, v.inside + ' inside, ' + v.entered + ' entered'])));
      st.textContent = 'live'; st.className = '';
    } else { st.textContent = 'waiting for frames'; st.className = ''; }
  } catch (e) { st.textContent = 'disconnected'; st.className = 'bad'; }
  setTimeout(poll, 500);
}
poll();
</script>
</body></html>
"""
