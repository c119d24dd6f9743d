"""What every sink shares: the :class:`Packet` handed to it, the :class:`Sink` life cycle, and the
:class:`SinkSpec` a sink module registers so that ``edgeseg run`` and ``edgeseg predict`` offer it.

Life cycle: ``Sink(...)`` only checks its arguments (no file, socket or connection yet);
:meth:`Sink.open` acquires and checks everything (temp files beside the targets, a listening
socket, the broker connection) and is called for every sink before the first frame is read, so a
failed start touches no existing file; ``write(packet)`` is called once per frame, in frame order,
from the pipeline's sink thread; ``close()`` (once, also after errors and Ctrl-C) commits: it renames
finished files into place when the run produced output, and otherwise removes its temp files and
leaves any previous output as it was.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple, Union

import numpy as np

__all__ = ["Packet", "Sink", "SinkOption", "SinkSpec", "SinkContext", "MASK_FORMATS", "register", "per_command"]

#: ``--masks`` choices -> ``Results.to_dict(masks=...)``
MASK_FORMATS: Dict[str, Optional[str]] = {"polygon": "polygon", "rle": "rle", "none": None}


class Packet:
    """One processed frame handed to the sinks.

    - ``frame``: the :class:`~edgeseg.live.sources.Frame` (BGR image, capture index, monotonic timestamp)
    - ``result``: its :class:`~edgeseg.results.Results` (``speed`` includes ``frame_age`` and stage ms)
    - ``fps``: the source's nominal frame rate (None when unknown); ``live``: whether frames may be skipped
    - ``tracks``: the frame's :class:`~edgeseg.live.tracking.FrameTracks` (trails, line/zone counts) when tracking
    """

    def __init__(self, frame: Any, result: Any, fps: Optional[float] = None, live: bool = False,
                 tracks: Any = None) -> None:
        self.frame = frame
        self.result = result
        self.fps = fps
        self.live = live
        self.tracks = tracks
        self._annotated: Optional[np.ndarray] = None
        self._records: Dict[Optional[str], Dict[str, Any]] = {}

    @property
    def annotated(self) -> np.ndarray:
        """The frame with boxes, labels and masks drawn (BGR uint8, computed once); with tracking,
        also track ids, trails, count lines and zones."""
        if self._annotated is None:
            if self.tracks is None:
                self._annotated = self.result.plot(self.frame.image)
            else:
                self._annotated = self.tracks.draw(self.result.plot(self.frame.image, trails=self.tracks.trails))
        return self._annotated

    def record(self, masks: Optional[str] = "polygon") -> Dict[str, Any]:
        """The JSON record of this frame: ``frame`` (capture index), ``time`` (capture wall-clock,
        Unix seconds), ``monotonic`` (capture ``time.monotonic()``), then ``Results.to_dict(masks)``
        (``path``, ``image_size`` as ``[h, w]``, ``detections``, ``speed_ms`` with the stage timings
        and ``frame_age``); with tracking each detection has ``track_id``, and with count lines or zones
        the record adds ``analytics`` (counts) and ``events`` (this frame's crossings, enters, exits)."""
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
            if self.tracks is not None:
                rec.update(self.tracks.record())
            self._records[masks] = rec
        return self._records[masks]


class Sink:
    """Base class of the outputs. Subclasses implement :meth:`start` (acquire and check), ``write``
    and ``close``; ``stop_requested`` lets a sink (a window's ``q`` key, a closed pipe) end the stream."""

    stop_requested = False
    opened = False

    def open(self) -> "Sink":
        """Acquire and check everything before the first frame (idempotent). Raises an
        :class:`~edgeseg.errors.EdgesegError` saying what is wrong; then nothing was changed."""
        if not self.opened:
            self.start()
            self.opened = True
        return self

    def start(self) -> None:
        """Open files, sockets, connections (called once by :meth:`open`)."""

    def write(self, packet: Packet) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


# -- the registry entry a sink module declares ------------------------------------------------------

PerCommand = Union[Any, Dict[str, Any]]


@dataclass(frozen=True)
class SinkOption:
    """One command-line option of a sink, as data (the CLI turns it into a click option).

    ``default`` and ``help`` may be a dict ``{command: value}`` when ``run`` and ``predict`` differ.
    ``type`` is ``str``, ``int`` or ``float``; ``choices`` a tuple of strings; ``range`` ``(min, max)``
    for integers.
    """

    flag: str
    dest: str
    help: PerCommand
    metavar: Optional[str] = None
    type: Any = str
    default: PerCommand = None
    is_flag: bool = False
    choices: Optional[Tuple[str, ...]] = None
    range: Optional[Tuple[int, int]] = None
    envvar: Optional[str] = None


@dataclass
class SinkContext:
    """What a sink's ``build`` may need to know besides its options.

    - ``command``: ``"run"`` or ``"predict"``
    - ``source_name``: the source as the user named it (shown by ``--serve``)
    - ``single_image``: the source is one image (``predict --save out.jpg`` writes that file)
    - ``model``: the model path (``predict --json`` names it in the document)
    """

    command: str = "run"
    source_name: str = ""
    single_image: bool = False
    model: str = ""


@dataclass(frozen=True)
class SinkSpec:
    """A sink as the CLI sees it: its options and how to build it from their values.

    ``build(options, context)`` returns the sink, or None when its options were not given; it only
    checks arguments (no side effects: :meth:`Sink.open` comes later). ``commands`` lists the
    commands that offer it; ``order`` sorts the options in ``--help`` and the sinks in a run.
    """

    name: str
    options: Tuple[SinkOption, ...]
    build: Callable[[Dict[str, Any], SinkContext], Optional[Sink]]
    commands: Tuple[str, ...] = ("run", "predict")
    order: int = 50


#: the one registry of sinks: name -> spec, filled by :func:`register` in each sink module
REGISTRY: Dict[str, SinkSpec] = {}


def register(spec: SinkSpec) -> SinkSpec:
    """Add a sink to the registry (call it at the end of the sink's module)."""
    dests = {o.dest: s.name for s in REGISTRY.values() if s.name != spec.name for o in s.options}
    for opt in spec.options:
        if opt.dest in dests:
            raise RuntimeError(f"sink {spec.name!r}: option {opt.flag} ({opt.dest}) is already declared by "
                               f"sink {dests[opt.dest]!r}")
    REGISTRY[spec.name] = spec
    return spec


def per_command(value: PerCommand, command: str) -> Any:
    """A :class:`SinkOption` field's value for ``command`` (fields may be ``{command: value}``)."""
    return value.get(command) if isinstance(value, dict) else value
