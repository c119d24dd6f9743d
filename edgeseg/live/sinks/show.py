"""``--show``: an OpenCV window (needs OpenCV with GUI support and a display)."""
from __future__ import annotations

import os
import sys
import threading
from typing import Any, Dict, Optional

import numpy as np

from ...errors import BackendUnavailableError
from .base import Packet, Sink, SinkContext, SinkOption, SinkSpec, register

__all__ = ["ShowSink"]


class ShowSink(Sink):
    """An OpenCV window (``q`` or Esc stops). Needs OpenCV with GUI support and a display.

    :meth:`write` (the sinks thread) only keeps the newest annotated frame; :meth:`poll`, which the
    pipeline calls from the thread iterating the stream (the main thread: macOS allows GUI calls
    nowhere else), shows it and reads the keyboard."""

    def __init__(self, title: str = "edgeseg") -> None:
        from ..sources import opencv_has

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
        self.open()
        img = packet.annotated
        with self._lock:
            self._pending = img

    def poll(self) -> None:
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
        if self._gui_thread is not None and self._gui_thread is threading.current_thread():
            import cv2

            cv2.destroyWindow(self.title)
            cv2.waitKey(1)


def _build(opts: Dict[str, Any], ctx: SinkContext) -> Optional[Sink]:
    return ShowSink() if opts.get("show") else None


register(SinkSpec(
    name="show",
    order=50,
    commands=("run",),
    options=(SinkOption("--show", "show", is_flag=True,
                        help="Show an OpenCV window (needs OpenCV with GUI support and a display)."),),
    build=_build,
))
