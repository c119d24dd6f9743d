"""Frame sources for ``edgeseg run`` and :meth:`Runtime.stream`: cameras, files, streams.

:func:`open_source` turns what a user typed into a :class:`Source`; iterating a source yields
:class:`Frame` objects (BGR uint8 HxWx3 image, capture index, ``time.monotonic()`` capture time).

=========================================  ===============================  ========================
what                                       example                          read how
=========================================  ===============================  ========================
camera index / device                      ``0``, ``/dev/video2``           V4L2 (Linux), live
video file                                 ``clip.mp4``                     every frame, in order
image file, folder, glob                   ``img.jpg``, ``imgs/``, ``*.png``  every file, sorted
network stream                             ``rtsp://...``, ``http://...``   FFmpeg, live, reconnects
Raspberry Pi camera (picamera2)            ``picamera``, ``picamera:1``     libcamera, live
GStreamer pipeline                         ``v4l2src ! ... ! appsink``      OpenCV+GStreamer, live
=========================================  ===============================  ========================

*Live* sources are read by a grabber thread that keeps only the newest frame: a slow consumer skips
frames instead of falling behind, so latency never grows (frame indices then have gaps; the source's
:attr:`~Source.stats` counts the dropped frames). A live source that stops delivering reconnects with
exponential backoff and logs each attempt on the ``edgeseg.live.sources`` logger (stderr by default).
"""
from __future__ import annotations

import contextlib
import glob as globlib
import logging
import os
import platform
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import BackendUnavailableError, EdgesegError, ImageReadError, InputError, SourceError
from ..io import IMAGE_SUFFIXES, read_image, to_bgr

__all__ = [
    "Frame",
    "Source",
    "FileSource",
    "LiveSource",
    "open_source",
    "list_cameras",
    "picamera_available",
    "opencv_has",
    "classify",
]

log = logging.getLogger("edgeseg.live.sources")

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")
_PICAMERA = re.compile(r"^(picamera2?|picam|libcamera)(?::(\d+))?$", re.I)


@dataclass
class Frame:
    """One captured frame.

    - ``image``: HxWx3 uint8 BGR
    - ``index``: 0-based capture counter of the source (live sources skip indices of dropped frames)
    - ``timestamp``: ``time.monotonic()`` seconds when the frame was captured (read from the device/stream)
    - ``path``: the file a frame came from, or the camera/stream name
    """

    image: np.ndarray
    index: int
    timestamp: float
    path: Optional[str] = None

    @property
    def age(self) -> float:
        """Seconds since capture."""
        return time.monotonic() - self.timestamp


class Source:
    """Base class: iterate to get :class:`Frame` objects; ``close()`` releases the device.

    ``live`` sources keep only the newest frame; file sources yield every frame in order.
    ``fps`` is the nominal rate (None when unknown), ``total`` the frame count (None for live/unknown).
    """

    live: bool = False
    name: str = "source"
    fps: Optional[float] = None
    total: Optional[int] = None

    def frames(self, stop: Optional[threading.Event] = None) -> Iterator[Frame]:
        """Yield frames until the source ends, :meth:`close` is called, or ``stop`` is set."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    @property
    def stats(self) -> Dict[str, int]:
        """Counters: ``captured``, ``delivered``, ``dropped`` (live only), ``reconnects``, ``skipped``."""
        return {}

    def close(self) -> None:
        pass

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


# -- OpenCV capabilities ---------------------------------------------------------------------------

def opencv_has(feature: str) -> bool:
    """Whether this OpenCV build has ``feature`` ("GStreamer", "FFMPEG", "GUI", "v4l/v4l2")
    according to ``cv2.getBuildInformation()``."""
    import cv2

    info = cv2.getBuildInformation()
    if feature.upper() == "GUI":
        m = re.search(r"^\s*GUI:\s*(\S+)", info, re.M)
        return bool(m) and m.group(1).upper() not in ("NONE", "NO")
    m = re.search(rf"^\s*{re.escape(feature)}:\s*(\S+)", info, re.M | re.I)
    return bool(m) and m.group(1).upper().startswith("YES")


def list_cameras(root: Union[str, Path] = "/") -> List[str]:
    """Video devices found on this machine (``/dev/video*`` on Linux, sorted by number)."""
    devs = Path(root) / "dev"
    found = [str(Path("/dev") / p.name) for p in devs.glob("video*") if re.fullmatch(r"video\d+", p.name)]
    return sorted(found, key=lambda s: int(re.sub(r"\D", "", s) or 0))


# -- file sources ------------------------------------------------------------------------------

def _is_image(path: Union[str, Path]) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


class FileSource(Source):
    """Image files and video files read in order, every frame (not live).

    ``paths`` may mix images (one frame each) and videos (all their frames). Unreadable images are
    skipped with a warning (counted in ``stats["skipped"]``); a video that cannot be opened raises
    :class:`SourceError`.
    """

    live = False

    def __init__(self, paths: Sequence[Union[str, Path]], name: Optional[str] = None) -> None:
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise SourceError(f"{name or 'source'}: no image or video files found")
        self.name = name or str(self.paths[0])
        self._closed = False
        self._count = 0
        self._skipped = 0
        self._cap: Any = None
        self.fps = None
        self.total = None
        videos = [p for p in self.paths if not _is_image(p)]
        if not videos:
            self.total = len(self.paths)
        elif len(self.paths) == 1:
            cap = self._open_video(self.paths[0])
            fps, n = _cap_fps(cap), int(cap.get(_cv2().CAP_PROP_FRAME_COUNT) or 0)
            self.fps, self.total = fps, (n if n > 0 else None)
            self._cap = cap  # reused by frames()

    @staticmethod
    def _open_video(path: Path) -> Any:
        cv2 = _cv2()
        if not path.is_file():
            raise SourceError(f"{path}: video file not found" if not path.exists() else f"{path}: not a file")
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise SourceError(
                f"{path}: OpenCV cannot open this as a video (expected a video OpenCV's FFmpeg reads, "
                f"e.g. .mp4/.avi/.mkv, or an image with suffix {', '.join(IMAGE_SUFFIXES[:5])}...)"
            )
        return cap

    def frames(self, stop: Optional[threading.Event] = None) -> Iterator[Frame]:
        for path in self.paths:
            if self._closed or (stop is not None and stop.is_set()):
                return
            if _is_image(path):
                try:
                    img = read_image(path)
                except ImageReadError as exc:
                    self._skipped += 1
                    log.warning("skipping %s", exc)
                    continue
                yield self._frame(img, path)
                continue
            cap = self._cap if self._cap is not None else self._open_video(path)
            self._cap = None
            try:
                while not self._closed and not (stop is not None and stop.is_set()):
                    ok, img = cap.read()
                    if not ok or img is None:
                        break
                    yield self._frame(img, path)
            finally:
                cap.release()

    def _frame(self, img: np.ndarray, path: Path) -> Frame:
        f = Frame(image=img if img.ndim == 3 and img.shape[2] == 3 else to_bgr(img), index=self._count,
                  timestamp=time.monotonic(), path=str(path))
        self._count += 1
        return f

    @property
    def stats(self) -> Dict[str, int]:
        return {"captured": self._count, "delivered": self._count, "dropped": 0, "reconnects": 0,
                "skipped": self._skipped}

    def close(self) -> None:
        self._closed = True
        cap, self._cap = self._cap, None  # opened in __init__ and never iterated
        _release(cap)


# -- live sources ------------------------------------------------------------------------------

class _Capture:
    """What a live source reads from: ``read() -> (ok, BGR image)`` and ``release()``."""

    def read(self) -> Tuple[bool, Optional[np.ndarray]]:  # pragma: no cover - interface
        raise NotImplementedError

    def release(self) -> None:  # pragma: no cover - interface
        pass


class LiveSource(Source):
    """A live source read by a grabber thread that keeps only the newest frame.

    ``open_fn()`` returns an object with ``read() -> (ok, image)`` and ``release()`` (an OpenCV
    ``VideoCapture`` or any equivalent) and raises :class:`SourceError` when the device/stream cannot
    be opened. It is called once here (so a source that cannot be opened fails immediately) and again
    on every reconnect. When ``read()`` fails the source reconnects after ``backoff[0]`` seconds,
    doubling up to ``backoff[1]``; with ``reconnect_timeout`` (seconds, None = forever) it gives up and
    the iteration raises :class:`SourceError`. ``reconnect=False`` ends the iteration instead.
    """

    live = True

    def __init__(self, open_fn: Callable[[], Any], name: str, *, fps: Optional[float] = None,
                 reconnect: bool = True, backoff: Tuple[float, float] = (0.5, 10.0),
                 reconnect_timeout: Optional[float] = None) -> None:
        self.name = name
        self._open_fn = open_fn
        self._reconnect = reconnect
        self._backoff = backoff
        self._reconnect_timeout = reconnect_timeout
        self._cond = threading.Condition()
        self._closed = threading.Event()
        self._latest: Optional[Frame] = None
        self._ended = False
        self._error: Optional[BaseException] = None
        self._captured = 0
        self._delivered = 0
        self._reconnects = 0
        self._read_last = -1
        self._cap = open_fn()
        self.fps = fps if fps is not None else _cap_fps(self._cap)
        self._thread = threading.Thread(target=self._grab, name=f"edgeseg-grab-{name[:30]}", daemon=True)
        self._thread.start()

    # grabber thread ---------------------------------------------------------------------------
    def _grab(self) -> None:
        cap = self._cap
        try:
            while not self._closed.is_set():
                try:
                    ok, img = cap.read()
                except Exception as exc:  # a vendor read error counts as a dropped stream
                    log.debug("%s: read raised %r", self.name, exc)
                    ok, img = False, None
                if ok and img is not None:
                    ts = time.monotonic()
                    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                        img = to_bgr(img, what=self.name)
                    with self._cond:
                        self._latest = Frame(img, self._captured, ts, self.name)
                        self._captured += 1
                        self._cond.notify_all()
                    continue
                _release(cap)
                cap = None
                if self._closed.is_set():
                    break
                if not self._reconnect:
                    log.info("%s: stream ended", self.name)
                    break
                cap = self._reopen()
                if cap is None:
                    break
        except BaseException as exc:  # pragma: no cover - unexpected; surfaced to the consumer
            self._error = exc
        finally:
            _release(cap)
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def _reopen(self) -> Any:
        delay, max_delay = self._backoff
        start = time.monotonic()
        attempt = 0
        log.warning("%s: stream stopped delivering frames; reconnecting in %.1fs", self.name, delay)
        while not self._closed.wait(delay):
            attempt += 1
            try:
                cap = self._open_fn()
            except EdgesegError as exc:
                elapsed = time.monotonic() - start
                if self._reconnect_timeout is not None and elapsed >= self._reconnect_timeout:
                    self._error = SourceError(
                        f"{self.name}: stream lost and not back after {elapsed:.0f}s "
                        f"({attempt} reconnect attempts); last error: {exc}")
                    log.error("%s", self._error)
                    return None
                delay = min(delay * 2.0, max_delay)
                log.warning("%s: reconnect attempt %d failed (%s); next attempt in %.1fs",
                            self.name, attempt, exc, delay)
                continue
            self._reconnects += 1
            log.warning("%s: reconnected after %d attempt(s), %.1fs without frames",
                        self.name, attempt, time.monotonic() - start)
            return cap
        return None

    # consumer side ----------------------------------------------------------------------------
    def frames(self, stop: Optional[threading.Event] = None) -> Iterator[Frame]:
        last = -1
        while True:
            with self._cond:
                while True:
                    if self._latest is not None and self._latest.index != last:
                        frame = self._latest
                        break
                    if self._ended or self._closed.is_set() or (stop is not None and stop.is_set()):
                        if self._error is not None and not self._closed.is_set():
                            raise SourceError(str(self._error)) from self._error
                        return
                    self._cond.wait(0.1)
                last = frame.index
                self._delivered += 1
            yield frame

    def read(self, timeout: Optional[float] = None) -> Optional[Frame]:
        """The newest frame not yet returned (waits up to ``timeout`` s); None when ended/timed out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            last = self._read_last
            while self._latest is None or self._latest.index == last:
                if self._ended or self._closed.is_set():
                    return None
                remaining = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            self._read_last = self._latest.index
            self._delivered += 1
            return self._latest

    @property
    def stats(self) -> Dict[str, int]:
        return {"captured": self._captured, "delivered": self._delivered,
                "dropped": max(0, self._captured - self._delivered), "reconnects": self._reconnects,
                "skipped": 0}

    def close(self) -> None:
        self._closed.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5.0)


def _release(cap: Any) -> None:
    if cap is not None:
        try:
            cap.release()
        except Exception:  # pragma: no cover - vendor cleanup
            pass


def _cv2() -> Any:
    import cv2

    return cv2


def _cap_fps(cap: Any) -> Optional[float]:
    try:
        fps = float(cap.get(_cv2().CAP_PROP_FPS))
    except Exception:
        return None
    return fps if 0 < fps < 1000 else None


# -- openers for the live kinds -----------------------------------------------------------------

def _open_camera(device: Union[int, str], width: Optional[int], height: Optional[int],
                 fps: Optional[float], fourcc: Optional[str]) -> Any:
    cv2 = _cv2()
    api = cv2.CAP_V4L2 if platform.system() == "Linux" else cv2.CAP_ANY
    cap = cv2.VideoCapture(device, api)
    if not cap.isOpened():
        cap.release()
        found = list_cameras()
        raise SourceError(
            f"camera {device!r} cannot be opened (expected a working video device); "
            + (f"devices found: {', '.join(found)}" if found else "no /dev/video* devices found")
            + (" — on a Raspberry Pi camera module use --source picamera" if not found else "")
        )
    if fourcc:
        cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*fourcc[:4].ljust(4)))
    if width:
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, int(width))
    if height:
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, int(height))
    if fps:
        cap.set(cv2.CAP_PROP_FPS, float(fps))
    with contextlib.suppress(Exception):  # not every driver supports it; the grabber drops anyway
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    return cap


def _open_stream(url: str, timeout_s: float) -> Any:
    cv2 = _cv2()
    ms = int(timeout_s * 1000)
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
    key = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
    tcp = url.lower().startswith("rtsp") and key not in os.environ
    if tcp:  # RTSP over TCP: no smeared frames from lost UDP packets on Wi-Fi (the env var overrides)
        os.environ[key] = "rtsp_transport;tcp"
    try:
        cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
    finally:
        if tcp:
            os.environ.pop(key, None)
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"{_redact(url)}: cannot open the stream with OpenCV's FFmpeg backend "
                          f"(expected a reachable RTSP/HTTP MJPEG/HLS URL; waited up to {timeout_s:.0f}s)")
    return cap


def _open_gstreamer(pipeline: str) -> Any:
    cv2 = _cv2()
    if not opencv_has("GStreamer"):
        raise SourceError(
            "a GStreamer pipeline was given but this OpenCV build has no GStreamer support "
            f"(cv2 {cv2.__version__}; the opencv-python wheels are built without it). Use the system "
            "OpenCV (e.g. apt install python3-opencv, or JetPack's OpenCV on Jetson) in a venv created "
            "with --system-site-packages, or build OpenCV with -DWITH_GSTREAMER=ON")
    if "appsink" not in pipeline:
        pipeline += " ! videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1"
    cap = cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"GStreamer pipeline cannot be started: {pipeline!r} "
                          "(check it with gst-launch-1.0, replacing appsink by fakesink)")
    return cap


class _PiCamera(_Capture):
    """picamera2 (libcamera) wrapped as a capture: BGR frames for OpenCV."""

    def __init__(self, num: int, width: Optional[int], height: Optional[int], fps: Optional[float]) -> None:
        try:
            from picamera2 import Picamera2  # type: ignore[import-not-found]
        except ImportError as exc:
            raise BackendUnavailableError(
                "the Raspberry Pi camera needs picamera2, which is not importable here "
                "(on Raspberry Pi OS: sudo apt install python3-picamera2, and create the venv with "
                "--system-site-packages)") from exc
        try:
            self.cam = Picamera2(num)
            # libcamera's "RGB888" is stored B,G,R per pixel: exactly OpenCV's BGR order
            main = {"size": (int(width or 640), int(height or 480)), "format": "RGB888"}
            controls = {"FrameRate": float(fps)} if fps else {}
            self.cam.configure(self.cam.create_video_configuration(main=main, controls=controls, buffer_count=2))
            self.cam.start()
        except Exception as exc:
            raise SourceError(f"Raspberry Pi camera {num} cannot be started: {exc}") from exc

    def read(self) -> Tuple[bool, Optional[np.ndarray]]:
        img = self.cam.capture_array("main")
        return (img is not None), (np.ascontiguousarray(img[..., :3]) if img is not None else None)

    def release(self) -> None:
        try:
            self.cam.stop()
            self.cam.close()
        except Exception:  # pragma: no cover - device cleanup
            pass


def picamera_available() -> bool:
    """Whether ``picamera2`` can be imported (Raspberry Pi OS with python3-picamera2)."""
    from ..backend import module_available

    return module_available("picamera2")


# -- the entry point ---------------------------------------------------------------------------

def _redact(url: str) -> str:
    """``rtsp://user:pass@host`` -> ``rtsp://user:***@host`` for messages."""
    return re.sub(r"(://[^:/@]+:)[^@/]*@", r"\1***@", url)


def classify(spec: Union[str, int, Path]) -> str:
    """What kind of source ``spec`` names: "camera", "picamera", "gstreamer", "stream", "images",
    "folder", "glob", "video" or "image" (files are not checked for existence here)."""
    if isinstance(spec, int):
        return "camera"
    s = str(spec).strip()
    if s.isdigit() or re.fullmatch(r"/dev/video\d+", s):
        return "camera"
    if _PICAMERA.match(s):
        return "picamera"
    if " ! " in s or s.rstrip().endswith("appsink") or re.match(r"^[a-z0-9]+src(\s|!|$)", s):
        return "gstreamer"
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", s)
    if m and m.group(1).lower() in STREAM_SCHEMES:
        return "stream"
    if m:
        return "unknown-scheme"
    if os.path.isdir(s):
        return "folder"
    if any(ch in s for ch in "*?[") and not os.path.exists(s):
        return "glob"
    return "image" if _is_image(s) else "video"


def open_source(spec: Union[str, int, Path, Source], *, width: Optional[int] = None,
                height: Optional[int] = None, fps: Optional[float] = None, fourcc: Optional[str] = None,
                live: Optional[bool] = None, reconnect: bool = True,
                reconnect_timeout: Optional[float] = None, timeout: float = 10.0,
                backoff: Tuple[float, float] = (0.5, 10.0)) -> Source:
    """Open what ``spec`` names (see the module table) as a :class:`Source`.

    - ``width``/``height``/``fps``/``fourcc``: requested camera mode (cameras, Pi cameras)
    - ``live``: force newest-frame-only (True) or every-frame (False) reading; default: cameras,
      streams and pipelines are live, files are not. ``live=False`` on a stream reads every frame
      (useful for a remote file over HTTP), at the cost of lag when inference is slower than the source.
    - ``reconnect``/``reconnect_timeout``/``backoff``: what a live source does when frames stop
    - ``timeout``: seconds to wait when opening or reading a network stream

    Raises :class:`SourceError` (naming what was expected and found) when the source cannot be opened.
    """
    if isinstance(spec, Source):
        return spec
    kind = classify(spec)
    s = str(spec).strip()
    live_kw: Dict[str, Any] = dict(reconnect=reconnect, reconnect_timeout=reconnect_timeout, backoff=backoff)
    if kind in ("folder", "glob", "image", "video") and live:
        raise InputError(f"{s}: live=True applies to cameras and streams, not to files")
    if kind == "camera":
        dev: Union[int, str] = int(s) if s.isdigit() else s
        try:
            return LiveSource(lambda: _open_camera(dev, width, height, fps, fourcc), f"camera {s}", fps=fps, **live_kw)
        except SourceError:
            if s.isdigit() and picamera_available():  # a Pi camera module is not a V4L2 camera
                log.warning("V4L2 camera %s cannot be opened; using Raspberry Pi camera %s through picamera2", s, s)
                return LiveSource(lambda: _PiCamera(int(s), width, height, fps), f"picamera {s}", fps=fps, **live_kw)
            raise
    if kind == "picamera":
        m = _PICAMERA.match(s)
        num = int(m.group(2) or 0) if m else 0
        return LiveSource(lambda: _PiCamera(num, width, height, fps), f"picamera {num}", fps=fps, **live_kw)
    if kind == "gstreamer":
        return LiveSource(lambda: _open_gstreamer(s), "gstreamer", **live_kw)
    if kind == "stream":
        if live is False:
            cap = _open_stream(s, timeout)
            return _StreamFile(cap, _redact(s))
        return LiveSource(lambda: _open_stream(s, timeout), _redact(s), **live_kw)
    if kind == "unknown-scheme":
        raise SourceError(f"{s}: unsupported URL scheme (expected one of {', '.join(STREAM_SCHEMES)})")
    if kind == "folder":
        files = sorted(p for p in Path(s).iterdir() if p.is_file() and not p.name.startswith(".")
                       and (_is_image(p) or p.suffix.lower() in _video_suffixes()))
        if not files:
            raise SourceError(f"{s}: folder holds no images or videos (expected files such as "
                              f"{', '.join(IMAGE_SUFFIXES[:4])} or .mp4)")
        return FileSource(files, name=s)
    if kind == "glob":
        files = sorted(Path(p) for p in globlib.glob(os.path.expanduser(s), recursive=True) if os.path.isfile(p))
        if not files:
            raise SourceError(f"{s}: the pattern matches no files")
        return FileSource(files, name=s)
    p = Path(os.path.expanduser(s))
    if not p.exists():
        found = list_cameras()
        hint = f" (cameras found: {', '.join(found)})" if found else ""
        raise SourceError(f"{s}: no such file, folder, camera index or stream URL{hint}")
    if p.is_dir():  # pragma: no cover - classified as folder above
        return open_source(str(p))
    return FileSource([p], name=str(p))


def _video_suffixes() -> Tuple[str, ...]:
    from ..io import VIDEO_SUFFIXES

    return VIDEO_SUFFIXES + (".gif",)


class _StreamFile(Source):
    """A network stream read every frame, in order (``live=False``); ends when the stream ends."""

    live = False

    def __init__(self, cap: Any, name: str) -> None:
        self._cap = cap
        self.name = name
        self.fps = _cap_fps(cap)
        self._count = 0
        self._closed = False

    def frames(self, stop: Optional[threading.Event] = None) -> Iterator[Frame]:
        try:
            while not self._closed and not (stop is not None and stop.is_set()):
                ok, img = self._cap.read()
                if not ok or img is None:
                    return
                yield Frame(img, self._count, time.monotonic(), self.name)
                self._count += 1
        finally:
            _release(self._cap)

    @property
    def stats(self) -> Dict[str, int]:
        return {"captured": self._count, "delivered": self._count, "dropped": 0, "reconnects": 0, "skipped": 0}

    def close(self) -> None:
        self._closed = True
