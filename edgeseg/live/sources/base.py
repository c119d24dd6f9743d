"""What every source shares: :class:`Frame`, the :class:`Source` interface, the capture protocol and
small OpenCV capture helpers."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np

__all__ = ["Frame", "Source", "Capture", "release", "capture_fps", "cv2_module", "log"]

#: one logger for every source module (``edgeseg run`` shows it on stderr)
log = logging.getLogger("edgeseg.live.sources")


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


class Capture:
    """What a live source reads from (an OpenCV ``VideoCapture`` or an equivalent):
    ``read() -> (ok, BGR image)``, where ``(False, None)`` means "no frame" (the device or stream
    stopped delivering) and an exception means a failure, and ``release()``."""

    def read(self) -> Tuple[bool, Optional[np.ndarray]]:  # pragma: no cover - interface
        raise NotImplementedError

    def release(self) -> None:  # pragma: no cover - interface
        pass


def release(cap: Any) -> None:
    """Release a capture (None is fine); vendor cleanup errors are ignored."""
    if cap is not None:
        try:
            cap.release()
        except Exception:  # pragma: no cover - vendor cleanup
            pass


def cv2_module() -> Any:
    """OpenCV, imported when a source needs it."""
    import cv2

    return cv2


def capture_fps(cap: Any) -> Optional[float]:
    """The capture's nominal frame rate, or None when it reports none (or nonsense)."""
    try:
        fps = float(cap.get(cv2_module().CAP_PROP_FPS))
    except Exception:
        return None
    return fps if 0 < fps < 1000 else None
