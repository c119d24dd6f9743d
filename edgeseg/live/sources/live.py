"""Live sources: a grabber thread keeps only the newest frame and reconnects when frames stop."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import numpy as np

from ...errors import EdgesegError, SourceError
from ...io import to_bgr
from .base import Frame, Source, capture_fps, log, release

__all__ = ["LiveSource"]


class LiveSource(Source):
    """A live source read by a grabber thread that keeps only the newest frame.

    ``open_fn()`` returns a capture (an OpenCV ``VideoCapture`` or anything with ``read() -> (ok,
    image)`` and ``release()``) and raises :class:`SourceError` when the device/stream cannot be
    opened. It is called once here (so a source that cannot be opened fails immediately) and again
    on every reconnect.

    - ``read()`` returning no frame (``ok`` False or image None: the device or stream stopped
      delivering) is a lost stream: the source reconnects after ``backoff[0]`` seconds, doubling up
      to ``backoff[1]``; with ``reconnect_timeout`` (seconds, None = forever) it gives up and the
      iteration raises :class:`SourceError`. ``reconnect=False`` ends the iteration instead.
    - ``read()`` raising is a failure, not a lost stream: the source stops (no reconnect) and the
      iteration raises :class:`SourceError` chained to the exception (``__cause__``).

    The grabber thread alone touches the capture, including its release: :meth:`close` stops the
    thread and waits for it (up to 5 s); a thread stuck inside ``read()`` releases the capture when
    the read returns.
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
        self._error: Optional[SourceError] = None
        self._captured = 0
        self._delivered = 0
        self._reconnects = 0
        self._read_last = -1
        self._cap = open_fn()
        self.fps = fps if fps is not None else capture_fps(self._cap)
        self._thread = threading.Thread(target=self._grab, name=f"edgeseg-grab-{name[:30]}", daemon=True)
        self._thread.start()

    # grabber thread ---------------------------------------------------------------------------
    def _grab(self) -> None:
        cap, self._cap = self._cap, None
        try:
            while not self._closed.is_set():
                try:
                    ok, img = cap.read()
                except Exception as exc:  # a failure (a bug, a broken driver): end, do not reconnect
                    self._error = SourceError(f"{self.name}: reading a frame failed: {type(exc).__name__}: {exc}")
                    self._error.__cause__ = exc
                    log.error("%s", self._error)
                    break
                if ok and img is not None:
                    ts = time.monotonic()
                    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                        img = to_bgr(img, what=self.name)
                    with self._cond:
                        self._latest = Frame(img, self._captured, ts, self.name)
                        self._captured += 1
                        self._cond.notify_all()
                    continue
                release(cap)  # no frame: the stream is lost
                cap = None
                if self._closed.is_set():
                    break
                if not self._reconnect:
                    log.info("%s: stream ended", self.name)
                    break
                cap = self._reopen()
                if cap is None:
                    break
        except BaseException as exc:  # pragma: no cover - unexpected (e.g. to_bgr); surfaced to the consumer
            self._error = SourceError(f"{self.name}: the grabber thread failed: {type(exc).__name__}: {exc}")
            self._error.__cause__ = exc
        finally:
            release(cap)
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
                    self._error.__cause__ = exc
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
                        if self._ended and self._error is not None and not self._closed.is_set():
                            raise self._error
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
