"""Where ``edgeseg run`` sends each processed frame: video/frames, JSON lines, browser, MQTT, window.

A sink has ``write(packet)`` (called once per frame, in frame order, from the pipeline's sink
thread) and ``close()`` (called once at the end, also after errors and Ctrl-C: it flushes and
finalizes). A :class:`Packet` holds the frame and its :class:`~edgeseg.results.Results` and computes
the annotated image and the JSON record once, however many sinks use them.

==================  =========================  ==========================================================
sink                CLI                        writes
==================  =========================  ==========================================================
:class:`VideoSink`  ``--save out.mp4``         annotated video (temp file renamed into place on close)
:class:`FramesSink` ``--save DIR``             one annotated JPEG per frame (each written atomically)
:class:`JsonSink`   ``--json FILE|-``          one JSON line per frame (:meth:`Packet.record`)
:class:`ServeSink`  ``--serve [HOST:]PORT``    MJPEG + stats page (:mod:`edgeseg.live.server`)
:class:`MqttSink`   ``--mqtt mqtt://H:P/T``    one JSON message per frame, or per change of detections
:class:`ShowSink`   ``--show``                 an OpenCV window (needs OpenCV with GUI support)
==================  =========================  ==========================================================
"""
from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union
from urllib.parse import unquote, urlsplit

import numpy as np

from ..errors import BackendUnavailableError, InputError
from ..io import IMAGE_SUFFIXES, VIDEO_SUFFIXES

__all__ = [
    "Packet",
    "Sink",
    "VideoSink",
    "FramesSink",
    "JsonSink",
    "ServeSink",
    "MqttSink",
    "ShowSink",
    "save_sink",
    "parse_mqtt_url",
    "MASK_FORMATS",
]

log = logging.getLogger("edgeseg.live.sinks")

#: ``--masks`` choices -> ``Results.to_dict(masks=...)``
MASK_FORMATS: Dict[str, Optional[str]] = {"polygon": "polygon", "rle": "rle", "none": None}


class Packet:
    """One processed frame handed to the sinks.

    - ``frame``: the :class:`~edgeseg.live.sources.Frame` (BGR image, capture index, monotonic timestamp)
    - ``result``: its :class:`~edgeseg.results.Results` (``speed`` includes ``frame_age`` and stage ms)
    - ``fps``: the source's nominal frame rate (None when unknown); ``live``: whether frames may be skipped
    """

    def __init__(self, frame: Any, result: Any, fps: Optional[float] = None, live: bool = False) -> None:
        self.frame = frame
        self.result = result
        self.fps = fps
        self.live = live
        self._annotated: Optional[np.ndarray] = None
        self._records: Dict[Optional[str], Dict[str, Any]] = {}

    @property
    def annotated(self) -> np.ndarray:
        """The frame with boxes, labels and masks drawn (BGR uint8, computed once)."""
        if self._annotated is None:
            self._annotated = self.result.plot(self.frame.image)
        return self._annotated

    def record(self, masks: Optional[str] = "polygon") -> Dict[str, Any]:
        """The JSON record of this frame: ``frame`` (capture index), ``time`` (capture wall-clock,
        Unix seconds), ``monotonic`` (capture ``time.monotonic()``), then ``Results.to_dict(masks)``
        (``path``, ``image_size``, ``detections``, ``speed_ms`` with the stage timings and
        ``frame_age``)."""
        if masks not in self._records:
            now_wall, now_mono = time.time(), time.monotonic()
            rec: Dict[str, Any] = {
                "frame": int(self.frame.index),
                "time": round(now_wall - (now_mono - self.frame.timestamp), 6),
                "monotonic": round(float(self.frame.timestamp), 6),
            }
            rec.update(self.result.to_dict(masks=masks))
            if rec.get("path") is None:
                rec["path"] = self.frame.path
            self._records[masks] = rec
        return self._records[masks]


class Sink:
    """Base class; ``stop_requested`` lets a sink (a window's ``q`` key) end the stream."""

    stop_requested = False

    def write(self, packet: Packet) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


def _tmp_beside(path: Path, suffix: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=str(path.parent))
    os.close(fd)
    return Path(tmp)


# -- files --------------------------------------------------------------------------------------

_FOURCC: Dict[str, str] = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "XVID"}


class VideoSink(Sink):
    """Annotated frames into a video file (``.mp4``/``.m4v``/``.mov`` mp4v, ``.avi`` MJPG, ``.mkv`` XVID).

    Written to a temp file beside ``path`` and renamed into place on :meth:`close`, so readers never
    see a half-written video. The frame rate is ``fps``, else the source's, else (live sources,
    which skip frames) the rate results actually arrive at, estimated from the first frames. Frames
    of another size than the first are resized to it.
    """

    _ESTIMATE_FRAMES = 15

    def __init__(self, path: Union[str, Path], fps: Optional[float] = None) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in _FOURCC:
            raise InputError(f"--save {self.path}: expected a video file ({', '.join(_FOURCC)}) or a folder")
        self.fourcc = _FOURCC[suffix]
        self.fps = fps
        self.frames = 0
        self._writer: Any = None
        self._tmp: Optional[Path] = None
        self._size: Optional[Tuple[int, int]] = None
        self._pending: List[Tuple[float, np.ndarray]] = []

    def write(self, packet: Packet) -> None:
        img = packet.annotated
        if self._writer is None:
            fps = self.fps or (None if packet.live else packet.fps)
            if fps is None:
                self._pending.append((packet.frame.timestamp, img))
                if len(self._pending) < self._ESTIMATE_FRAMES:
                    return
                self._open(self._estimate_fps(), img)
                self._flush_pending()
                return
            self._open(fps, img)
        self._write(img)

    def _estimate_fps(self) -> float:
        if len(self._pending) >= 2:
            dt = self._pending[-1][0] - self._pending[0][0]
            if dt > 0:
                return max(1.0, min(120.0, (len(self._pending) - 1) / dt))
        return 30.0

    def _flush_pending(self) -> None:
        pending, self._pending = self._pending, []
        for _, im in pending:
            self._write(im)

    def _open(self, fps: float, img: np.ndarray) -> None:
        import cv2

        h, w = img.shape[:2]
        self._size = (w, h)
        self._tmp = _tmp_beside(self.path, self.path.suffix)
        writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*self.fourcc), float(fps), (w, h))
        if not writer.isOpened():
            self._tmp.unlink(missing_ok=True)
            raise InputError(f"--save {self.path}: OpenCV cannot write a {self.fourcc} video here "
                             f"({w}x{h} at {fps:.1f} fps); try .avi (MJPG) or a folder for JPEG frames")
        self.fps = fps
        self._writer = writer

    def _write(self, img: np.ndarray) -> None:
        import cv2

        if self._size is not None and (img.shape[1], img.shape[0]) != self._size:
            img = cv2.resize(img, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(img)
        self.frames += 1

    def close(self) -> None:
        if self._writer is None and self._pending:
            self._open(self._estimate_fps(), self._pending[0][1])
            self._flush_pending()
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            if self._tmp is not None:
                os.replace(self._tmp, self.path)
            log.info("saved %d frames to %s", self.frames, self.path)


class FramesSink(Sink):
    """One annotated JPEG per frame in ``folder``: ``<image stem>.jpg`` for image files,
    ``<video stem>_<index>.jpg`` for videos, ``frame_<index>.jpg`` for cameras and streams.
    Each file is written to a temp name and renamed."""

    def __init__(self, folder: Union[str, Path], quality: int = 95) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise InputError(f"--save {self.folder}: exists and is not a folder (expected a folder or a video file name)")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.quality = int(quality)
        self.frames = 0
        self._used: Dict[str, int] = {}

    def _name(self, packet: Packet) -> str:
        path = packet.frame.path
        if path and Path(path).suffix.lower() in IMAGE_SUFFIXES:
            stem = Path(path).stem
            n = self._used.get(stem, 0)
            self._used[stem] = n + 1
            return f"{stem}.jpg" if n == 0 else f"{stem}_{n}.jpg"
        if path and Path(path).suffix.lower() in VIDEO_SUFFIXES + (".gif",) and os.path.exists(path):
            return f"{Path(path).stem}_{packet.frame.index:06d}.jpg"
        return f"frame_{packet.frame.index:06d}.jpg"

    def write(self, packet: Packet) -> None:
        import cv2

        ok, buf = cv2.imencode(".jpg", packet.annotated, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:  # pragma: no cover - encoding a valid BGR image does not fail
            raise InputError(f"cannot encode frame {packet.frame.index} as JPEG")
        target = self.folder / self._name(packet)
        tmp = _tmp_beside(target, ".jpg")
        try:
            tmp.write_bytes(buf.tobytes())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.frames += 1


def save_sink(target: Union[str, Path], fps: Optional[float] = None) -> Sink:
    """``--save``: a :class:`VideoSink` for a video file name, else a :class:`FramesSink` folder."""
    p = Path(target)
    suffix = p.suffix.lower()
    if suffix in _FOURCC:
        return VideoSink(p, fps=fps)
    if suffix in IMAGE_SUFFIXES or suffix in VIDEO_SUFFIXES:
        raise InputError(f"--save {p}: expected a video file ({', '.join(_FOURCC)}) or a folder, "
                         f"found suffix {suffix}")
    return FramesSink(p)


class JsonSink(Sink):
    """One JSON object per line and frame (see :meth:`Packet.record`) to ``target`` or ``-`` (stdout).

    A file is written as ``.<name>.*.tmp`` beside the target, flushed after every line, and renamed
    onto the target on close.
    """

    def __init__(self, target: Union[str, Path], masks: Optional[str] = "polygon") -> None:
        if masks not in MASK_FORMATS.values():
            raise InputError(f"json masks: expected one of {list(MASK_FORMATS)}, got {masks!r}")
        self.masks = masks
        self.lines = 0
        self.target = str(target)
        self._tmp: Optional[Path] = None
        if self.target == "-":
            self._fh = sys.stdout
        else:
            path = Path(self.target)
            if path.is_dir():
                raise InputError(f"--json {path}: is a folder (expected a file name such as results.jsonl, or -)")
            self._tmp = _tmp_beside(path, ".tmp")
            self._fh = open(self._tmp, "w", encoding="utf-8")

    def write(self, packet: Packet) -> None:
        self._fh.write(json.dumps(packet.record(self.masks), separators=(",", ":")) + "\n")
        self._fh.flush()
        self.lines += 1

    def close(self) -> None:
        if self._tmp is None:
            self._fh.flush()
            return
        if not self._fh.closed:
            self._fh.close()
            os.replace(self._tmp, self.target)


# -- live outputs -----------------------------------------------------------------------------------

class ServeSink(Sink):
    """Publishes each annotated frame (JPEG) and the stats to a :class:`~edgeseg.live.server.PreviewServer`."""

    def __init__(self, bind: str = "8080", token: Optional[str] = None, quality: int = 80,
                 max_width: Optional[int] = 1280, source_name: str = "") -> None:
        from .server import PreviewServer, parse_bind

        host, port = parse_bind(bind)
        self.server = PreviewServer(host, port, token=token, source_name=source_name)
        self.server.start()
        self.quality = int(quality)
        self.max_width = max_width
        self._times: List[float] = []

    @property
    def url(self) -> str:
        return self.server.url

    def write(self, packet: Packet) -> None:
        import cv2

        img = packet.annotated
        if self.max_width and img.shape[1] > self.max_width:
            scale = self.max_width / img.shape[1]
            img = cv2.resize(img, (self.max_width, max(1, int(round(img.shape[0] * scale)))), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:  # pragma: no cover
            return
        now = time.monotonic()
        self._times.append(now)
        self._times = [t for t in self._times if now - t <= 2.0][-120:]
        fps = (len(self._times) - 1) / (self._times[-1] - self._times[0]) if len(self._times) > 1 and self._times[-1] > self._times[0] else 0.0
        res = packet.result
        counts: Dict[str, int] = {}
        for n in res.class_names:
            counts[n] = counts.get(n, 0) + 1
        stats = {
            "frame": int(packet.frame.index),
            "fps": round(fps, 2),
            "ms": {k: round(float(v), 2) for k, v in res.speed.items()},
            "counts": counts,
            "detections": [{"class_name": n, "score": round(float(s), 3), "box": [round(float(v), 1) for v in b]}
                           for n, s, b in zip(res.class_names, res.scores, res.boxes)][:50],
            "image_size": [int(res.orig_shape[1]), int(res.orig_shape[0])],
        }
        self.server.publish(buf.tobytes(), stats)

    def close(self) -> None:
        self.server.close()


def parse_mqtt_url(url: str) -> Dict[str, Any]:
    """``mqtt[s]://[user[:password]@]host[:port]/topic/path`` -> host, port, topic, tls, username, password.
    Raises :class:`InputError` for anything else."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise InputError(f"--mqtt {url!r}: expected mqtt://HOST[:PORT]/TOPIC (or mqtts:// for TLS)")
    tls = scheme in ("mqtts", "ssl")
    topic = unquote(parts.path.lstrip("/"))
    if not parts.hostname:
        raise InputError(f"--mqtt {url!r}: no broker host (expected mqtt://HOST[:PORT]/TOPIC)")
    if not topic:
        raise InputError(f"--mqtt {url!r}: no topic (expected mqtt://HOST[:PORT]/TOPIC, e.g. mqtt://localhost/edgeseg/cam1)")
    if "+" in topic or "#" in topic or parts.fragment or url.endswith("#"):
        raise InputError(f"--mqtt {url!r}: the topic may not contain wildcards (+ or #) when publishing")
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as exc:
        raise InputError(f"--mqtt {url!r}: bad port: {exc}") from exc
    return {"host": parts.hostname, "port": port, "topic": topic, "tls": tls,
            "username": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password else None}


class MqttSink(Sink):
    """One JSON message (:meth:`Packet.record`) per frame to an MQTT broker (paho-mqtt, extra ``mqtt``).

    ``on_change=True`` publishes only when the detected classes and their counts differ from the last
    message actually delivered (boxes moving do not count), plus the first frame. The client
    reconnects by itself with a 1-30 s backoff when the broker goes away; messages published while it
    is disconnected are dropped and counted in :attr:`dropped` (never queued without bound).
    """

    def __init__(self, url: str, *, on_change: bool = False, masks: Optional[str] = None, qos: int = 0,
                 retain: bool = False, client_id: Optional[str] = None, connect_timeout: float = 5.0,
                 keepalive: int = 30) -> None:
        try:
            import paho.mqtt.client as mqtt
        except ImportError as exc:
            raise BackendUnavailableError(
                "--mqtt needs the paho-mqtt package, which is not installed: pip install 'edgeseg[mqtt]'") from exc
        import threading

        cfg = parse_mqtt_url(url)
        if qos not in (0, 1, 2):
            raise InputError(f"mqtt qos must be 0, 1 or 2, got {qos}")
        self.topic = cfg["topic"]
        self.url = f"mqtt{'s' if cfg['tls'] else ''}://{cfg['host']}:{cfg['port']}/{self.topic}"
        self.on_change = on_change
        self.masks = masks
        self.qos = qos
        self.retain = retain
        self.sent = 0
        self.dropped = 0
        self.unchanged = 0
        self._last_key: Optional[Tuple[Tuple[str, int], ...]] = None
        self._last_info: Any = None
        self._connected = threading.Event()
        self._mqtt = mqtt
        client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                             client_id=client_id or f"edgeseg-{os.getpid()}-{id(self) & 0xFFFF:x}")
        if cfg["username"]:
            client.username_pw_set(cfg["username"], cfg["password"])
        if cfg["tls"]:
            client.tls_set()
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.max_queued_messages_set(64)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        self.client = client
        try:
            client.connect_async(cfg["host"], cfg["port"], keepalive=keepalive)
        except (OSError, ValueError) as exc:
            raise InputError(f"--mqtt {self.url}: cannot start connecting: {exc}") from exc
        client.loop_start()
        if not self._connected.wait(connect_timeout):
            log.warning("MQTT broker %s not reachable yet; messages are dropped until it is (retrying)", self.url)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any = None) -> None:
        if getattr(reason_code, "is_failure", False):
            log.warning("MQTT broker %s refused the connection: %s", self.url, reason_code)
            return
        if self.sent or self.dropped:
            log.warning("MQTT reconnected to %s (%d messages dropped so far)", self.url, self.dropped)
        else:
            log.info("MQTT connected to %s", self.url)
        self._connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any = None) -> None:
        if self._connected.is_set():
            log.warning("MQTT connection to %s lost (%s); reconnecting", self.url, reason_code)
        self._connected.clear()

    def write(self, packet: Packet) -> None:
        res = packet.result
        key: Optional[Tuple[Tuple[str, int], ...]] = None
        if self.on_change:
            counts: Dict[str, int] = {}
            for n in res.class_names:
                counts[n] = counts.get(n, 0) + 1
            key = tuple(sorted(counts.items()))
            if key == self._last_key:
                self.unchanged += 1
                return
        if not self.client.is_connected():
            self.dropped += 1
            return
        payload = json.dumps(packet.record(self.masks), separators=(",", ":"))
        info = self.client.publish(self.topic, payload, qos=self.qos, retain=self.retain)
        if info.rc != self._mqtt.MQTT_ERR_SUCCESS:
            self.dropped += 1
            return
        self.sent += 1
        self._last_info = info
        if self.on_change:
            self._last_key = key

    def close(self) -> None:
        try:
            if self._last_info is not None and self.client.is_connected():
                try:
                    self._last_info.wait_for_publish(timeout=2.0)
                except (RuntimeError, ValueError):
                    pass
            self.client.disconnect()
        finally:
            self.client.loop_stop()
        if self.dropped:
            log.warning("MQTT: %d messages sent, %d dropped while the broker was unreachable", self.sent, self.dropped)


class ShowSink(Sink):
    """An OpenCV window (``q`` or Esc stops). Needs OpenCV with GUI support and a display.

    :meth:`write` (the sinks thread) only keeps the newest annotated frame; :meth:`poll`, which the
    pipeline calls from the thread iterating the stream (the main thread: macOS allows GUI calls
    nowhere else), shows it and reads the keyboard."""

    def __init__(self, title: str = "edgeseg") -> None:
        import threading

        from .sources import opencv_has

        if not opencv_has("GUI"):
            raise BackendUnavailableError(
                "--show needs OpenCV with GUI support, and this OpenCV has none (opencv-python-headless). "
                "Use --serve 8080 and open http://127.0.0.1:8080 in a browser instead "
                "(or replace opencv-python-headless by opencv-python on a desktop)")
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise BackendUnavailableError(
                "--show needs a display, but neither DISPLAY nor WAYLAND_DISPLAY is set (SSH session?). "
                "Use --serve 8080 and open http://<board>:8080 (with --serve 0.0.0.0:8080 --token SECRET)")
        self.title = title
        self._lock = threading.Lock()
        self._pending: Optional[np.ndarray] = None
        self._gui_thread: Any = None  # the thread that opened the window (only it may close it)

    def write(self, packet: Packet) -> None:
        img = packet.annotated
        with self._lock:
            self._pending = img

    def poll(self) -> None:
        import threading

        import cv2

        with self._lock:
            img, self._pending = self._pending, None
        if img is not None:
            cv2.imshow(self.title, img)
            self._gui_thread = threading.current_thread()
        if self._gui_thread is not None:
            key = cv2.waitKey(1) & 0xFF
            if key in (ord("q"), 27):
                self.stop_requested = True

    def close(self) -> None:
        import threading

        if self._gui_thread is not None and self._gui_thread is threading.current_thread():
            import cv2

            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
