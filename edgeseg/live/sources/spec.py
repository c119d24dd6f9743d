"""What a user typed -> which kind of source (:func:`classify`) -> an opened :class:`Source`
(:func:`open_source`)."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from ...errors import InputError, SourceError
from ...io import list_files
from .base import Source, log
from .cameras import (PiCamera, list_cameras, open_camera, open_gstreamer, open_stream, picamera_available,
                      redact)
from .files import FileSource, StreamFile, is_image
from .live import LiveSource

__all__ = ["classify", "open_source", "STREAM_SCHEMES"]

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")
_PICAMERA = re.compile(r"^(picamera2?|picam|libcamera)(?::(\d+))?$", re.I)


def classify(spec: Union[str, int, Path]) -> str:
    """What kind of source ``spec`` names: "camera", "picamera", "gstreamer", "stream", "images",
    "folder", "glob", "video" or "image" ("unknown-scheme" for a URL of another scheme; files are
    not checked for existence here)."""
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
    return "image" if is_image(s) else "video"


def open_source(spec: Union[str, int, Path, Source], *, width: Optional[int] = None,
                height: Optional[int] = None, fps: Optional[float] = None, fourcc: Optional[str] = None,
                live: Optional[bool] = None, reconnect: bool = True,
                reconnect_timeout: Optional[float] = None, timeout: float = 10.0,
                backoff: Tuple[float, float] = (0.5, 10.0)) -> Source:
    """Open what ``spec`` names (see :mod:`edgeseg.live.sources`) as a :class:`Source`.

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
            return LiveSource(lambda: open_camera(dev, width, height, fps, fourcc), f"camera {s}", fps=fps, **live_kw)
        except SourceError:
            if s.isdigit() and picamera_available():  # a Pi camera module is not a V4L2 camera
                log.warning("V4L2 camera %s cannot be opened; using Raspberry Pi camera %s through picamera2", s, s)
                return LiveSource(lambda: PiCamera(int(s), width, height, fps), f"picamera {s}", fps=fps, **live_kw)
            raise
    if kind == "picamera":
        m = _PICAMERA.match(s)
        num = int(m.group(2) or 0) if m else 0
        return LiveSource(lambda: PiCamera(num, width, height, fps), f"picamera {num}", fps=fps, **live_kw)
    if kind == "gstreamer":
        return LiveSource(lambda: open_gstreamer(s), "gstreamer", **live_kw)
    if kind == "stream" and _image_url(s):  # http(s)://host/img.jpg: one image, fetched with a timeout
        from .url import UrlImageSource

        return UrlImageSource(s, timeout=timeout)
    if kind == "stream":
        if live is False:
            return StreamFile(open_stream(s, timeout), redact(s))
        return LiveSource(lambda: open_stream(s, timeout), redact(s), **live_kw)
    if kind == "unknown-scheme":
        raise SourceError(f"{s}: unsupported URL scheme (expected one of {', '.join(STREAM_SCHEMES)})")
    if kind in ("folder", "glob"):
        return FileSource(list_files(s), name=s)  # the project's one file lister
    p = Path(os.path.expanduser(s))
    if not p.exists():
        found = list_cameras()
        hint = f" (cameras found: {', '.join(found)})" if found else ""
        raise SourceError(f"{s}: no such file, folder, camera index or stream URL{hint}")
    if p.is_dir():  # pragma: no cover - classified as folder above
        return open_source(str(p))
    return FileSource([p], name=str(p))


def _image_url(url: str) -> bool:
    """An http(s) URL whose path ends in an image suffix (read as one image, not as a stream)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.scheme.lower() in ("http", "https") and is_image(parts.path)
