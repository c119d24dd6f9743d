"""Where ``edgeseg run``, ``edgeseg predict`` and :meth:`Runtime.stream` send each processed frame.

One module per sink; each registers a :class:`~.base.SinkSpec` (its CLI options and how to build
it) in the one registry that both commands read, so a new sink is one new file in this package.

==================  ============================  ==========================================================
sink                CLI                           writes
==================  ============================  ==========================================================
:class:`VideoSink`  ``--save out.mp4``            annotated video (temp file renamed into place on close)
:class:`FramesSink` ``--save DIR``                one annotated JPEG per frame (each written atomically)
:class:`ImageSink`  ``--save out.jpg``            one annotated image (a single image input)
:class:`JsonSink`   ``--json FILE|-``             JSON lines per frame (run) or one JSON document (predict)
:class:`ServeSink`  ``--serve [HOST:]PORT``       MJPEG + stats page (:mod:`edgeseg.live.server`)
:class:`MqttSink`   ``--mqtt mqtt://H:P/T``       one JSON message per frame, or per change of detections
:class:`ShowSink`   ``--show``                    an OpenCV window (needs OpenCV with GUI support)
==================  ============================  ==========================================================

Life cycle (see :mod:`.base`): construct (checks arguments only) -> :meth:`Sink.open` before the
first frame (files, sockets, connections; a failed start changes nothing) -> ``write`` per frame ->
``close`` (commits by rename when there was output, else leaves previous outputs untouched).
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Dict, List, Sequence

from .base import MASK_FORMATS, REGISTRY, Packet, Sink, SinkContext, SinkOption, SinkSpec, per_command, register
from .frames import FramesSink, ImageSink
from .jsonfile import JsonSink
from .mqtt import MqttSink, parse_mqtt_url
from .save import save_sink
from .serve import ServeSink
from .show import ShowSink
from .video import VideoSink

__all__ = [
    "Packet", "Sink", "SinkOption", "SinkSpec", "SinkContext", "register", "sink_specs", "build_sinks",
    "open_sinks", "close_sinks", "VideoSink", "FramesSink", "ImageSink", "JsonSink", "ServeSink", "MqttSink",
    "ShowSink", "save_sink", "parse_mqtt_url", "MASK_FORMATS", "per_command",
]


def _discover() -> None:
    """Import every module of this package (each registers its sink)."""
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def sink_specs(command: str = "run") -> List[SinkSpec]:
    """The registered sinks that ``command`` offers, in option order."""
    _discover()
    return sorted((s for s in REGISTRY.values() if command in s.commands), key=lambda s: (s.order, s.name))


def build_sinks(options: Dict[str, Any], context: SinkContext) -> List[Sink]:
    """The sinks the options ask for (each spec's ``build``), not opened yet. Checks arguments only:
    nothing is written, bound or connected here. Raises the first sink's error."""
    return [s for s in (spec.build(options, context) for spec in sink_specs(context.command)) if s is not None]


def open_sinks(sinks: Sequence[Any]) -> None:
    """Open every sink before the first frame; when one fails, close the ones opened (their temp
    files go, existing outputs stay as they were) and raise its error."""
    for i, sink in enumerate(sinks):
        opener = getattr(sink, "open", None)
        if not callable(opener):
            continue
        try:
            opener()
        except BaseException:
            close_sinks(sinks[:i + 1])
            raise


def close_sinks(sinks: Sequence[Any]) -> List[BaseException]:
    """Close every sink (commit or discard), going on after errors; returns the errors."""
    errors: List[BaseException] = []
    for sink in sinks:
        try:
            sink.close()
        except Exception as exc:  # keep closing the others
            errors.append(exc)
    return errors
