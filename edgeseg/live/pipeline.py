"""The live pipeline behind :meth:`Runtime.stream` and ``edgeseg run``.

Frames flow one way through stages that run in their own threads, joined by bounded queues::

    source --> capture --> preprocess --> inference --> postprocess --> sinks --> your loop
              (decode)    (letterbox)    (backend)     (NMS, masks)    (save/json/serve/mqtt)

OpenCV, numpy and the inference backends release the GIL in their heavy calls, so the stages overlap:
while the backend runs frame *n*, frame *n+1* is decoded and letterboxed and frame *n-1* is
decoded into masks and written. Queues are small (``queue_size``), so memory stays bounded. For
live sources (cameras, streams) the capture queue holds only the newest frame, and preprocessing
takes a frame only when inference asks for the next one: when inference is slower than the camera,
old frames are dropped instead of queued, and the *frame age* (how old a frame is when its result is
ready) stays about one preprocess + inference + postprocess time.

Each :class:`~edgeseg.results.Results` gets, besides ``preprocess``/``inference``/``postprocess``,
these entries in ``res.speed`` (milliseconds): ``read`` (decoding a file frame; absent for live
sources), ``frame_age`` (capture to result ready: the end-to-end latency) and ``sinks`` (time the
sinks took for this frame). Its fields ``frame_index`` (the source's capture index), ``frame_time``
(``time.monotonic()`` at capture) and ``path`` come from the frame (and survive ``res[mask]``).

Tracking (``tracker=``, ``analytics=``): a :class:`~edgeseg.live.tracking.TrackingStage` runs in the
postprocess thread right after decoding (frames reach it in capture order), sets
``res.track_ids`` and ``res.speed["track"]``, and hands its per-frame trails and counts to the
sinks (``Packet.tracks``); :attr:`Stream.tracking` holds the stage (final counts, summary).

Stopping: :meth:`Stream.stop` (or SIGINT/SIGTERM/SIGHUP with ``handle_signals=True``) stops capturing; the
frames already in flight finish and every sink is closed (videos finalized, files renamed into
place). A second signal aborts at once (KeyboardInterrupt). Leaving a ``for`` loop early or calling
:meth:`Stream.close` also closes the sinks and the source.

Threads and resources: the capture thread alone iterates the source and the sinks thread alone
calls ``sink.write``. :meth:`Stream.close` waits for them (``timeout``); a resource is closed only
once the thread using it has left it: when a thread is still inside a ``read`` or ``write`` after the
timeout, that thread closes its source or sinks itself as soon as the call returns. Sinks that have a
``poll()`` method (the ``--show`` window) get it called from the thread that iterates the stream,
once per result and while waiting for one: GUI toolkits (macOS's in particular) need the main thread.
:meth:`Stream.summary` may be called from any thread while the stream runs.
"""
from __future__ import annotations

import contextlib
import logging
import queue
import signal
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import EdgesegError, InputError
from .sources import Frame, Source, open_source

__all__ = ["stream", "Stream", "runtime_stages"]

log = logging.getLogger("edgeseg.live.pipeline")

_END = object()
_POLL = 0.05  # seconds: how often blocked stages look at the stop/abort flags

class _Handoff:
    """A resource that one stage thread uses (the source, the sinks), closed exactly once by whoever
    is last: :meth:`Stream.close` when the thread has already left it, else the thread itself when it
    leaves (after :meth:`Stream.close` stopped waiting for it)."""

    def __init__(self, close: Callable[[], List[BaseException]], what: str, left: bool = False) -> None:
        self._close = close
        self._what = what
        self._lock = threading.Lock()
        self._left = left
        self._wanted = False

    def leave(self) -> None:
        """The thread is done with the resource (called from that thread)."""
        with self._lock:
            self._left = True
            run = self._wanted
        if run:
            for exc in self._close():
                log.error("closing %s after its thread returned failed: %s", self._what, exc)

    def close_or_hand_over(self) -> Optional[List[BaseException]]:
        """Close now (the errors of closing) when the thread has left; else None: the thread will."""
        with self._lock:
            self._wanted = True
            if not self._left:
                return None
        return self._close()


Stages = Tuple[Callable[[np.ndarray], Tuple[Any, Any]], Callable[[Any], Any], Callable[[Any, Any, np.ndarray], Any]]


def runtime_stages(runtime: Any) -> Stages:
    """``(preprocess, infer, postprocess)`` callables of a runtime.

    Uses ``runtime.preprocess(img) -> (feeds, ctx)``, ``runtime.infer(feeds) -> outputs`` and
    ``runtime.postprocess(outputs, ctx, img) -> Results`` when the runtime has them; otherwise the
    whole ``runtime(img)`` call is the inference stage.
    """
    pre = getattr(runtime, "preprocess", None)
    inf = getattr(runtime, "infer", None)
    post = getattr(runtime, "postprocess", None)
    if callable(pre) and callable(inf) and callable(post):
        return pre, inf, post
    if not callable(runtime):
        raise InputError(f"stream: expected an edgeseg Runtime, found {type(runtime).__name__}")
    return (lambda img: (img, None)), runtime, (lambda outputs, ctx, img: outputs)


class _Item:
    """A frame on its way through the stages."""

    __slots__ = ("frame", "data", "ctx", "speed", "tracks")

    def __init__(self, frame: Frame, read_ms: Optional[float]) -> None:
        self.frame = frame
        self.data: Any = None
        self.ctx: Any = None
        self.tracks: Any = None  # FrameTracks when tracking
        self.speed: Dict[str, float] = {} if read_ms is None else {"read": read_ms}


def stream(runtime: Any, source: Any, *, sinks: Sequence[Any] = (), max_frames: Optional[int] = None,
           pipelined: bool = True, queue_size: int = 2, handle_signals: bool = False,
           skip_errors: bool = False, tracker: Any = None, analytics: Any = None,
           **source_options: Any) -> "Stream":
    """Run ``runtime`` on every frame of ``source``; iterate the result to get one
    :class:`~edgeseg.results.Results` per frame, in capture order.

    - ``source``: anything :func:`edgeseg.live.sources.open_source` takes (camera index, file, folder,
      glob, URL, GStreamer pipeline, ``"picamera"``) or an open :class:`~edgeseg.live.sources.Source`;
      ``source_options`` (``width``, ``height``, ``fps``, ``live``, ``reconnect_timeout``...) go to it.
    - ``sinks``: objects with ``write(packet)`` and ``close()`` (see :mod:`edgeseg.live.sinks`), fed in order
      in their own thread before each result is handed to you; a sink's optional ``poll()`` is called
      from the thread iterating the stream (for GUI work, which needs the main thread).
    - ``max_frames``: stop after this many frames.
    - ``pipelined=False`` runs every stage in the calling thread, one frame at a time (the reference
      the pipeline benchmark compares against).
    - ``handle_signals``: SIGINT/SIGTERM/SIGHUP stop the stream cleanly (main thread only).
    - ``skip_errors``: for file sources, a frame whose preprocessing, inference or postprocessing
      raises is dropped and listed in :attr:`Stream.failures` instead of ending the stream
      (``predict``: one bad file does not lose the results of the others).

    Every sink with an ``open()`` is opened before the first frame is read (when one fails, the
    opened ones are closed and the error is raised: nothing was written).
    - ``tracker``: ``"bytetrack"``, ``"botsort"``, a tracker YAML file, a
      :class:`~edgeseg.live.tracking.TrackerConfig` or tracker; ``analytics``: an
      :class:`~edgeseg.live.tracking.Analytics` (count lines, zones; implies ByteTrack). See
      :func:`edgeseg.live.tracking.stage.pipeline_stage`.

    The source is opened here, so a bad source raises :class:`~edgeseg.errors.SourceError` at once.
    """
    if max_frames is not None and max_frames < 1:
        raise InputError(f"max_frames must be >= 1, got {max_frames}")
    if queue_size < 1:
        raise InputError(f"queue_size must be >= 1, got {queue_size}")
    src = open_source(source, **source_options) if not isinstance(source, Source) else source
    tracking = None
    if tracker is not None or analytics:
        from .tracking.stage import pipeline_stage

        tracking, runtime = pipeline_stage(runtime, src, tracker, analytics)
    return Stream(runtime, src, sinks=list(sinks), max_frames=max_frames, pipelined=pipelined,
                  queue_size=queue_size, handle_signals=handle_signals, skip_errors=skip_errors,
                  tracking=tracking)


class Stream:
    """An iterable of Results from a running pipeline (see :func:`stream`). Use it in a ``for`` loop
    or a ``with`` block; :meth:`stop` ends it gracefully, :meth:`close` at once."""

    def __init__(self, runtime: Any, source: Source, *, sinks: List[Any], max_frames: Optional[int],
                 pipelined: bool, queue_size: int, handle_signals: bool, skip_errors: bool = False,
                 tracking: Any = None) -> None:
        from .sinks import Packet, open_sinks

        try:
            open_sinks(sinks)  # before the first frame: a failed start writes nothing
        except BaseException:
            source.close()
            raise
        self.skip_errors = skip_errors and not source.live
        self.failures: List[Tuple[str, str]] = []  # (path, message) of frames dropped by skip_errors
        self.runtime = runtime
        self.tracking = tracking
        self.source = source
        self.sinks = sinks
        self.max_frames = max_frames
        self.pipelined = pipelined
        self._stages = runtime_stages(runtime)
        self._stop = threading.Event()   # graceful: no new frames, drain what is in flight
        self._abort = threading.Event()  # immediate: drop everything
        self._errors: List[BaseException] = []
        self._closed = False
        self._finished = False
        self._count = 0  # frames captured
        self._taken = 0  # frames taken by preprocessing (live sources drop the rest)
        self._want = threading.Semaphore(0)  # inference asks preprocessing for a frame (live sources)
        self._started = time.monotonic()
        self._ages: List[float] = []
        self._stage_ms: Dict[str, List[float]] = {}
        self._stats_lock = threading.Lock()  # the sinks thread records, summary() reads from any thread
        self._pollers = [s for s in sinks if callable(getattr(s, "poll", None))]
        self._source_use = _Handoff(self._close_source, f"source {source.name}", left=not pipelined)
        self._sinks_use = _Handoff(self._close_sinks, "the sinks", left=not pipelined)
        self._signals: Dict[int, Any] = {}
        self._signal_count = 0
        if handle_signals:
            self._install_signals()
        self._packet = Packet
        if pipelined:
            live = bool(source.live)
            size = 1 if live else queue_size
            self._q = [queue.Queue(maxsize=size) for _ in range(4)]
            self._out: "queue.Queue[Any]" = queue.Queue(maxsize=queue_size)
            self._threads = [
                threading.Thread(target=self._guard(self._capture), name="edgeseg-capture", daemon=True),
                threading.Thread(target=self._guard(self._stage_pre), name="edgeseg-preprocess", daemon=True),
                threading.Thread(target=self._guard(self._stage_infer), name="edgeseg-inference", daemon=True),
                threading.Thread(target=self._guard(self._stage_post), name="edgeseg-postprocess", daemon=True),
                threading.Thread(target=self._guard(self._stage_sinks), name="edgeseg-sinks", daemon=True),
            ]
            for t in self._threads:
                t.start()
        else:
            self._threads = []
            self._frames = source.frames(self._stop)

    # -- control ------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop capturing; frames already in flight still come out, then iteration ends."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def close(self, timeout: float = 10.0) -> None:
        """Stop now: drop frames in flight, wait up to ``timeout`` s for the threads, close the sinks
        and the source. A thread still inside a source read or a sink write then closes what it uses
        itself when that call returns (a warning says so): nothing is closed under a running call.
        Raises the first sink error, if closing a sink failed."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if not self._finished:
            self._abort.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            log.warning("stream closed while %s still running after %.0fs; the source and sinks they use "
                        "are closed when their current call returns", ", ".join(stuck), timeout)
        if not self.pipelined:
            with contextlib.suppress(ValueError):  # (ValueError: close() called while another thread iterates)
                _close_iterator(self._frames)  # a generator's finally releases its files now
        errors = self._sinks_use.close_or_hand_over() or []
        errors += self._source_use.close_or_hand_over() or []
        self._restore_signals()
        if errors and not self._errors:
            raise errors[0]

    def _close_sinks(self) -> List[BaseException]:
        errors: List[BaseException] = []
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:  # keep closing the others; report the first
                log.error("closing %s failed: %s", type(sink).__name__, exc)
                errors.append(exc)
        return errors

    def _close_source(self) -> List[BaseException]:
        try:
            self.source.close()
        except Exception as exc:
            log.error("closing %s failed: %s", self.source.name, exc)
            return [exc]
        return []

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - safety net when a loop is abandoned
        try:
            if not self._closed:
                self._abort.set()
                self._stop.set()
        except Exception:
            pass

    # -- iteration ------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        try:
            while True:
                try:
                    res = self.__next__()
                except StopIteration:
                    return
                yield res
        finally:
            self.close()

    def __next__(self) -> Any:
        if self._closed:
            raise StopIteration
        try:
            item = self._next_pipelined() if self.pipelined else self._next_sequential()
        except BaseException:
            self.close()
            raise
        if item is _END:
            self._finished = True
            self.close()
            if self._errors:
                raise self._errors[0]
            raise StopIteration
        try:
            self._poll()
        except BaseException:
            self.close()
            raise
        return item

    def _poll(self) -> None:
        """Main-thread work of the sinks (``poll()``: GUI windows), in the thread iterating the stream."""
        for sink in self._pollers:
            sink.poll()
            if getattr(sink, "stop_requested", False) and not self._stop.is_set():
                log.info("%s asked to stop", type(sink).__name__)
                self._stop.set()

    def _next_pipelined(self) -> Any:
        while True:
            if self._errors:
                self._abort.set()
                raise self._errors[0]
            try:
                return self._out.get(timeout=_POLL)
            except queue.Empty:
                if self._abort.is_set():  # closed from another thread: nothing more will come
                    return _END
                self._poll()

    def _next_sequential(self) -> Any:
        while True:
            if self._stop.is_set() or (self.max_frames is not None and self._count >= self.max_frames):
                return _END
            t0 = time.perf_counter()
            frame = next(self._frames, None)
            if frame is None:
                return _END
            item = _Item(frame, None if self.source.live else _ms(t0))
            self._count += 1
            if all(self._run_body(body, item) for body in (self._do_pre, self._do_infer, self._do_post)):
                return self._do_sinks(item)

    def _run_body(self, body: Callable[[_Item], Any], item: _Item) -> bool:
        """Run a stage on ``item``; with ``skip_errors``, an error drops the frame (False) and is
        listed in :attr:`failures` (vendor errors with their type: they are reported, not hidden)."""
        try:
            body(item)
        except Exception as exc:
            if not self.skip_errors:
                raise
            path = str(item.frame.path or f"frame {item.frame.index}")
            kind = type(exc).__name__ if type(exc).__module__ == "builtins" else f"{type(exc).__module__}.{type(exc).__name__}"
            text = str(exc).strip() if isinstance(exc, EdgesegError) else f"{kind}: {str(exc).strip()}"
            message = text if path in text else f"{path}: {text}"  # the path once, not twice
            self.failures.append((path, message))
            log.warning("skipping %s", message)
            return False
        return True

    # -- stage bodies -------------------------------------------------------------------------------
    def _do_pre(self, item: _Item) -> None:
        t0 = time.perf_counter()
        item.data, item.ctx = self._stages[0](item.frame.image)
        item.speed["preprocess"] = _ms(t0)

    def _do_infer(self, item: _Item) -> None:
        t0 = time.perf_counter()
        item.data = self._stages[1](item.data)
        item.speed["inference"] = _ms(t0)

    def _do_post(self, item: _Item) -> None:
        t0 = time.perf_counter()
        res = self._stages[2](item.data, item.ctx, item.frame.image)
        item.speed["postprocess"] = _ms(t0)
        frame = item.frame
        if self.tracking is not None:
            res, item.tracks = self.tracking(res, frame.index, frame.timestamp)
        if getattr(res, "image", None) is None:
            res.image = frame.image
        if getattr(res, "path", None) is None:
            res.path = frame.path
        res.speed.update(item.speed)
        res.speed["frame_age"] = (time.monotonic() - frame.timestamp) * 1000.0
        res.frame_index = frame.index
        res.frame_time = frame.timestamp
        item.data = res

    def _do_sinks(self, item: _Item) -> Any:
        res = item.data
        t0 = time.perf_counter()
        if self.sinks:
            packet = self._packet(item.frame, res, fps=self.source.fps, live=bool(self.source.live),
                                  tracks=item.tracks)
            for sink in self.sinks:
                sink.write(packet)
                if getattr(sink, "stop_requested", False):
                    log.info("%s asked to stop", type(sink).__name__)
                    self._stop.set()
        res.speed["sinks"] = _ms(t0)
        with self._stats_lock:
            self._ages.append(res.speed["frame_age"])
            for k, v in res.speed.items():
                self._stage_ms.setdefault(k, []).append(v)
        return res

    # -- threads ------------------------------------------------------------------------------------
    def _guard(self, body: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                body()
            except BaseException as exc:
                self._errors.append(exc)
                self._abort.set()
                self._stop.set()
        return run

    def _put(self, q: "queue.Queue[Any]", item: Any) -> bool:
        while not self._abort.is_set():
            try:
                q.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def _put_newest(self, q: "queue.Queue[Any]", item: Any) -> bool:
        """Put ``item``, replacing a waiting older one (live sources: never queue stale frames)."""
        while not self._abort.is_set():
            try:
                q.put_nowait(item)
                return True
            except queue.Full:
                try:
                    q.get_nowait()
                except queue.Empty:
                    pass
        return False

    def _get(self, q: "queue.Queue[Any]") -> Any:
        while not self._abort.is_set():
            try:
                return q.get(timeout=_POLL)
            except queue.Empty:
                continue
        return _END

    def _capture(self) -> None:
        live = self.source.live
        put = self._put_newest if live else self._put
        frames = self.source.frames(self._stop)
        try:
            while not self._stop.is_set():
                if not live and self.max_frames is not None and self._count >= self.max_frames:
                    break  # (live sources count the frames actually taken, in _stage_pre)
                t0 = time.perf_counter()
                frame = next(frames, None)
                if frame is None:
                    break
                self._count += 1
                if not put(self._q[0], _Item(frame, None if live else _ms(t0))):
                    return
        finally:
            try:
                _close_iterator(frames)  # this thread runs the generator: release its files here
            finally:
                self._source_use.leave()
                self._put(self._q[0], _END)

    def _stage(self, qin: "queue.Queue[Any]", qout: "queue.Queue[Any]", body: Callable[[_Item], Any]) -> None:
        while True:
            item = self._get(qin)
            if item is _END:
                self._put(qout, _END)
                return
            if body == self._do_sinks:
                out = body(item)
            elif self._run_body(body, item):
                out = item
            else:
                continue  # skip_errors dropped this frame
            if not self._put(qout, out):
                return

    def _stage_pre(self) -> None:
        if not self.source.live:
            self._stage(self._q[0], self._q[1], self._do_pre)
            return
        # live: take a frame only when inference asks for one (a credit), so the frame letterboxed is
        # the newest when inference gets free, instead of one that waited a whole inference period
        qin, qout = self._q[0], self._q[1]
        while True:
            while not self._want.acquire(timeout=_POLL):
                if self._abort.is_set():
                    return
            item = self._get(qin)
            if item is _END:
                self._put(qout, _END)
                return
            if self.max_frames is not None and self._taken >= self.max_frames:
                self._want.release()
                continue  # enough frames: drop what the capture thread still hands over
            self._taken += 1
            if self.max_frames is not None and self._taken >= self.max_frames:
                self._stop.set()  # the capture thread ends and sends _END after this frame
            if not self._run_body(self._do_pre, item):
                continue
            if not self._put(qout, item):
                return

    def _stage_infer(self) -> None:
        qin, qout = self._q[1], self._q[2]
        while True:
            self._want.release()  # ready for the next frame (used by live sources)
            item = self._get(qin)
            if item is _END:
                self._put(qout, _END)
                return
            if not self._run_body(self._do_infer, item):
                continue
            if not self._put(qout, item):
                return

    def _stage_post(self) -> None:
        self._stage(self._q[2], self._q[3], self._do_post)

    def _stage_sinks(self) -> None:
        try:
            self._stage(self._q[3], self._out, self._do_sinks)
        finally:
            self._sinks_use.leave()

    # -- signals ------------------------------------------------------------------------------------
    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise InputError("handle_signals=True needs the main thread (Python delivers signals there)")

        def handler(signum: int, _frame: Any) -> None:
            self._signal_count += 1
            if self._signal_count > 1:
                self._abort.set()
                raise KeyboardInterrupt
            log.warning("%s received: stopping after the frames in flight (again to abort)",
                        signal.Signals(signum).name)
            self._stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):  # SIGHUP: an SSH drop
            if sig is not None:
                self._signals[sig] = signal.signal(sig, handler)

    def _restore_signals(self) -> None:
        for sig, old in self._signals.items():
            try:
                signal.signal(sig, old)
            except (ValueError, TypeError):  # pragma: no cover - not main thread / odd handler
                pass
        self._signals = {}

    @property
    def signalled(self) -> bool:
        """Whether a SIGINT/SIGTERM stopped this stream."""
        return self._signal_count > 0

    # -- summary ------------------------------------------------------------------------------------
    def summary(self) -> Dict[str, Any]:
        """Frames, wall time, FPS, median/p90 ms per stage and frame age, source counters."""
        elapsed = time.monotonic() - self._started
        with self._stats_lock:  # a snapshot: the sinks thread keeps recording
            n = len(self._ages)
            stage_ms = {k: list(v) for k, v in self._stage_ms.items() if v}
        stages = {k: {"median": round(float(np.median(v)), 2), "p90": round(float(np.percentile(v, 90)), 2)}
                  for k, v in stage_ms.items()}
        out = {
            "frames": n,
            "seconds": round(elapsed, 3),
            "fps": round(n / elapsed, 2) if elapsed > 0 else 0.0,
            "pipelined": self.pipelined,
            "ms": stages,
            "source": {"name": self.source.name, "live": bool(self.source.live), **self.source.stats},
        }
        if self.tracking is not None:
            out["tracking"] = self.tracking.summary()
        return out


def _close_iterator(frames: Any) -> None:
    close = getattr(frames, "close", None)  # generators have it; a plain iterator has nothing to close
    if callable(close):
        close()


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0
