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
exponential backoff and logs each attempt on the ``edgeseg.live.sources`` logger (stderr by default);
a capture whose ``read()`` raises ends the stream with a :class:`~edgeseg.errors.SourceError`.

Modules: :mod:`.spec` (classify and open what a user typed), :mod:`.files` (files, every frame),
:mod:`.live` (the grabber thread, reconnects), :mod:`.cameras` (OpenCV probes, camera and stream
openers, camera listing), :mod:`.base` (Frame, Source).
"""
from __future__ import annotations

from .base import Frame, Source
from .cameras import camera_devices, list_cameras, opencv_has, picamera_available
from .files import FileSource, StreamFile
from .live import LiveSource
from .spec import STREAM_SCHEMES, classify, open_source

__all__ = [
    "Frame",
    "Source",
    "FileSource",
    "LiveSource",
    "StreamFile",
    "open_source",
    "list_cameras",
    "camera_devices",
    "picamera_available",
    "opencv_has",
    "classify",
    "STREAM_SCHEMES",
]
