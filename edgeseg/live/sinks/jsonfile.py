"""``--json FILE|-``: one JSON record per frame, as JSON lines (``run``) or as one JSON document
(``predict``)."""
from __future__ import annotations

import errno
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Dict, Optional, TextIO, Union

from ...errors import InputError
from ...io import AtomicFile, VIDEO_SUFFIXES
from .base import MASK_FORMATS, Packet, Sink, SinkContext, SinkOption, SinkSpec, register

__all__ = ["JsonSink"]

log = logging.getLogger("edgeseg.live.sinks")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


class JsonSink(Sink):
    """JSON records (see :meth:`Packet.record`) to ``target``, or ``-`` for stdout.

    - ``layout="lines"`` (``run``): one object per line and frame, with ``frame``, ``time``,
      ``monotonic`` and the result's fields.
    - ``layout="document"`` (``predict``): ``{"model": ..., "results": [...]}`` with one result per
      line, each ``Results.to_dict`` (``path``, ``image_size`` ``[h, w]``, ``detections``,
      ``speed_ms``) plus ``frame`` (the index within the video) for video frames.

    A file is written to a hidden temp file beside the target (made by :meth:`open`), flushed after
    every record, and renamed onto the target by :meth:`close` once a record was written; without
    records (a failed start, no readable input) an existing target is left as it was. On stdout, a
    reader that goes away (``| head``) ends the run quietly: the sink asks the stream to stop.
    """

    def __init__(self, target: Union[str, Path], masks: Optional[str] = "polygon", layout: str = "lines",
                 model: Optional[str] = None) -> None:
        if masks not in MASK_FORMATS.values():
            raise InputError(f"json masks: expected one of {list(MASK_FORMATS)}, got {masks!r}")
        if layout not in ("lines", "document"):
            raise InputError(f"json layout: expected 'lines' or 'document', got {layout!r}")
        self.masks = masks
        self.layout = layout
        self.model = model
        self.lines = 0
        self.target = str(target)
        self.broken_pipe = False
        if self.target != "-" and Path(self.target).is_dir():
            raise InputError(f"--json {self.target}: is a folder (expected a file name such as results.jsonl, or -)")
        self._file: Optional[AtomicFile] = None
        self._fh: Optional[TextIO] = None
        self._video_frames: Dict[str, int] = {}

    def start(self) -> None:
        if self.target == "-":
            self._fh = sys.stdout
            return
        self._file = AtomicFile(self.target, suffix=".tmp", what=f"--json {self.target}")
        try:
            self._fh = open(self._file.tmp, "w", encoding="utf-8")
        except OSError as exc:
            self._file.discard()
            raise InputError(f"--json {self.target}: cannot write the temp file {self._file.tmp}: {exc}") from exc

    def _record(self, packet: Packet) -> Dict[str, Any]:
        if self.layout == "lines":
            return packet.record(self.masks)
        rec = packet.result.to_dict(masks=self.masks)
        path = rec.get("path") or packet.frame.path
        rec["path"] = path
        if path and Path(path).suffix.lower() in VIDEO_SUFFIXES + (".gif",):
            n = self._video_frames.get(path, 0)
            self._video_frames[path] = n + 1
            rec["frame"] = n
        return rec

    def _emit(self, text: str) -> None:
        if self.broken_pipe or self._fh is None:
            return
        try:
            self._fh.write(text)
            self._fh.flush()
        except BrokenPipeError:
            self._pipe_closed()
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise
            self._pipe_closed()

    def _pipe_closed(self) -> None:
        """stdout's reader went away: stop quietly, like Unix tools (the other outputs still finalize)."""
        self.broken_pipe = True
        self.stop_requested = True
        log.info("--json -: the reader closed the pipe; stopping")
        try:  # what is still buffered would raise again when Python exits: send it nowhere
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass

    def write(self, packet: Packet) -> None:
        self.open()
        text = _dumps(self._record(packet))
        if self.layout == "document":
            head = _dumps({"model": self.model})[:-1] + ',"results":[\n' if self.lines == 0 else ",\n"
            text = head + text
        else:
            text += "\n"
        self._emit(text)
        self.lines += 1

    def close(self) -> None:
        if self.layout == "document" and self.opened and self._fh is not None:
            tail = "\n]}\n" if self.lines else _dumps({"model": self.model, "results": []}) + "\n"
            if self.lines or self._file is None:  # stdout always gets a document
                self._emit(tail)
        fh, self._fh = self._fh, None
        f, self._file = self._file, None
        if f is None:  # stdout (or never opened)
            return
        if fh is not None and not fh.closed:
            fh.close()
        if self.lines:
            f.commit()
        else:
            f.discard()


def _build(opts: Dict[str, Any], ctx: SinkContext) -> Optional[Sink]:
    if not opts.get("json_out"):
        return None
    layout = "document" if ctx.command == "predict" else "lines"
    return JsonSink(opts["json_out"], masks=MASK_FORMATS[opts.get("masks_format") or "none"], layout=layout,
                    model=ctx.model or None)


register(SinkSpec(
    name="json",
    order=20,
    options=(
        SinkOption("--json", "json_out", metavar="FILE|-", help={
            "run": "Write one JSON line per frame to FILE (- for stdout).",
            "predict": "Write the results as one JSON document to FILE (- for stdout).",
        }),
        SinkOption("--masks", "masks_format", choices=tuple(MASK_FORMATS), default={"run": "polygon", "predict": "rle"},
                   help={"run": "How masks appear in --json and --mqtt records.",
                         "predict": "How masks appear in the JSON: COCO RLE (compressed counts), polygons in "
                                    "source pixels, or omitted."}),
    ),
    build=_build,
))
