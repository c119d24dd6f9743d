"""Sources read every frame, in order: image and video files (:class:`FileSource`) and a network
stream read as a file (:class:`StreamFile`, ``live=False``)."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ...errors import EdgesegError, SourceError
from ...io import IMAGE_SUFFIXES, read_image, to_bgr
from .base import Frame, Source, capture_fps, cv2_module, log, release

__all__ = ["FileSource", "StreamFile", "is_image"]


def is_image(path: Union[str, Path]) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


class FileSource(Source):
    """Image files and video files read in order, every frame (not live).

    ``paths`` may mix images (one frame each) and videos (all their frames). Unreadable images (and,
    among several files, videos that cannot be opened) are skipped with a warning, counted in
    ``stats["skipped"]`` and listed in :attr:`failures` as ``(path, message)``; a single video that
    cannot be opened raises :class:`SourceError`.
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
        self.failures: List[Tuple[str, str]] = []
        self._cap: Any = None  # a video opened here, until frames() or close() takes it
        self._cap_lock = threading.Lock()
        self.fps = None
        self.total = None
        videos = [p for p in self.paths if not is_image(p)]
        if not videos:
            self.total = len(self.paths)
        elif len(self.paths) == 1:
            cap = self._open_video(self.paths[0])
            fps, n = capture_fps(cap), int(cap.get(cv2_module().CAP_PROP_FRAME_COUNT) or 0)
            self.fps, self.total = fps, (n if n > 0 else None)
            self._cap = cap  # reused by frames()

    @staticmethod
    def _open_video(path: Path) -> Any:
        cv2 = cv2_module()
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
            if is_image(path):
                try:
                    img = read_image(path)
                except EdgesegError as exc:  # undecodable, not a file, unsupported dtype, too large
                    self._skip(path, exc)
                    continue
                yield self._frame(img, path)
                continue
            cap = self._take_cap()  # the iteration owns it now
            if cap is None:
                try:
                    cap = self._open_video(path)
                except SourceError as exc:
                    if len(self.paths) == 1:
                        raise
                    self._skip(path, exc)
                    continue
            try:
                while not self._closed and not (stop is not None and stop.is_set()):
                    ok, img = cap.read()
                    if not ok or img is None:
                        break
                    yield self._frame(img, path)
            finally:
                cap.release()

    def _skip(self, path: Path, exc: BaseException) -> None:
        self._skipped += 1
        self.failures.append((str(path), str(exc)))
        log.warning("skipping %s", exc)

    def _frame(self, img: np.ndarray, path: Path) -> Frame:
        f = Frame(image=img if img.ndim == 3 and img.shape[2] == 3 else to_bgr(img), index=self._count,
                  timestamp=time.monotonic(), path=str(path))
        self._count += 1
        return f

    @property
    def stats(self) -> Dict[str, int]:
        return {"captured": self._count, "delivered": self._count, "dropped": 0, "reconnects": 0,
                "skipped": self._skipped}

    def _take_cap(self) -> Any:
        with self._cap_lock:
            cap, self._cap = self._cap, None
        return cap

    def close(self) -> None:
        self._closed = True
        release(self._take_cap())  # opened in __init__ and never iterated


class StreamFile(Source):
    """A network stream read every frame, in order (``live=False``); ends when the stream ends.

    ``cap`` is an opened capture; the iteration takes it over (and releases it when it ends), and
    :meth:`close` releases it when no iteration has taken it.
    """

    live = False

    def __init__(self, cap: Any, name: str) -> None:
        self._cap = cap
        self._cap_lock = threading.Lock()
        self.name = name
        self.fps = capture_fps(cap)
        self._count = 0
        self._closed = False

    def _take_cap(self) -> Any:
        with self._cap_lock:
            cap, self._cap = self._cap, None
        return cap

    def frames(self, stop: Optional[threading.Event] = None) -> Iterator[Frame]:
        cap = self._take_cap()
        if cap is None:
            return  # closed, or an earlier iteration consumed the stream
        try:
            while not self._closed and not (stop is not None and stop.is_set()):
                ok, img = cap.read()
                if not ok or img is None:
                    return
                yield Frame(img, self._count, time.monotonic(), self.name)
                self._count += 1
        finally:
            release(cap)

    @property
    def stats(self) -> Dict[str, int]:
        return {"captured": self._count, "delivered": self._count, "dropped": 0, "reconnects": 0, "skipped": 0}

    def close(self) -> None:
        self._closed = True
        release(self._take_cap())  # opened by open_source and never iterated
