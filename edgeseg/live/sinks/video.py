"""Annotated frames into one video file (``--save out.mp4``; the option itself is in :mod:`.save`)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from ...errors import InputError
from ...io import AtomicFile
from .base import Packet, Sink

__all__ = ["VideoSink", "FOURCC"]

log = logging.getLogger("edgeseg.live.sinks")

#: video suffix -> the OpenCV fourcc written
FOURCC: Dict[str, str] = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "XVID"}


class VideoSink(Sink):
    """Annotated frames into a video file (``.mp4``/``.m4v``/``.mov`` mp4v, ``.avi`` MJPG, ``.mkv`` XVID).

    :meth:`open` makes the hidden temp file beside ``path`` and checks that OpenCV can write this
    kind of video there; frames go to the temp file, which :meth:`close` renames onto ``path`` once
    at least one frame was written (a run without frames, or a killed one, leaves an existing
    ``path`` as it was). The frame rate is ``fps``, else the source's, else (live sources, which
    skip frames) the rate results actually arrive at, estimated from the first frames. Frames of
    another size than the first are resized to it.
    """

    _ESTIMATE_FRAMES = 15

    def __init__(self, path: Union[str, Path], fps: Optional[float] = None, what: str = "--save") -> None:
        self.path = Path(path)
        self.what = f"{what} {self.path}"
        suffix = self.path.suffix.lower()
        if suffix not in FOURCC:
            raise InputError(f"{self.what}: expected a video file ({', '.join(FOURCC)}) or a folder")
        if self.path.is_dir():
            raise InputError(f"{self.what}: is a folder (expected a video file name, or a folder name "
                             f"without a video suffix)")
        self.fourcc = FOURCC[suffix]
        self.fps = fps
        self.frames = 0
        self._file: Optional[AtomicFile] = None
        self._writer: Any = None
        self._size: Optional[Tuple[int, int]] = None
        self._pending: List[Tuple[float, np.ndarray]] = []

    def start(self) -> None:
        import cv2

        self._file = AtomicFile(self.path, what=self.what)
        probe = cv2.VideoWriter(str(self._file.tmp), cv2.VideoWriter_fourcc(*self.fourcc), 30.0, (64, 48))
        ok = probe.isOpened()
        probe.release()
        if not ok:
            self._file.discard()
            self._file = None
            raise InputError(f"{self.what}: OpenCV cannot write a {self.fourcc} video here; "
                             "try .avi (MJPG) or a folder for JPEG frames")

    def write(self, packet: Packet) -> None:
        self.open()
        img = packet.annotated
        if self._writer is None:
            fps = self.fps or (None if packet.live else packet.fps)
            if fps is None:
                self._pending.append((packet.frame.timestamp, img))
                if len(self._pending) < self._ESTIMATE_FRAMES:
                    return
                self._start_writer(self._estimate_fps(), img)
                self._flush_pending()
                return
            self._start_writer(fps, img)
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

    def _start_writer(self, fps: float, img: np.ndarray) -> None:
        import cv2

        f = self._file
        if f is None:
            raise InputError(f"{self.what}: a frame arrived after the video was closed")
        h, w = img.shape[:2]
        self._size = (w, h)
        writer = cv2.VideoWriter(str(f.tmp), cv2.VideoWriter_fourcc(*self.fourcc), float(fps), (w, h))
        if not writer.isOpened():
            raise InputError(f"{self.what}: OpenCV cannot write a {self.fourcc} video of {w}x{h} at "
                             f"{fps:.1f} fps here; try .avi (MJPG) or a folder for JPEG frames")
        self.fps = fps
        self._writer = writer

    def _write(self, img: np.ndarray) -> None:
        import cv2

        if self._size is not None and (img.shape[1], img.shape[0]) != self._size:
            img = cv2.resize(img, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(img)
        self.frames += 1

    def close(self) -> None:
        if self._file is None:
            return
        try:
            if self._writer is None and self._pending:
                self._start_writer(self._estimate_fps(), self._pending[0][1])
                self._flush_pending()
        finally:
            if self._writer is not None:
                self._writer.release()
                self._writer = None
            f, self._file = self._file, None
            if self.frames:
                f.commit()
                log.info("saved %d frames to %s", self.frames, self.path)
            else:
                f.discard()
