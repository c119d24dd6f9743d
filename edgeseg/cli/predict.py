"""``edgeseg predict``: ``run`` over files, with other defaults.

The same source (:func:`~edgeseg.live.sources.open_source`: files, folders, globs, videos, image
URLs, streams read to their end), the same pipeline and the same sinks as ``edgeseg run``; what
differs is the defaults: every frame in order, ``--json`` as one document, ``--masks rle``,
``--save DIR`` keeps each video as a video, bad inputs are listed and make the exit status 1.
"""
from __future__ import annotations

import sys
from typing import Any

import click

from .common import (drive, echo_err, echo_failures, failures_of, is_single_image, model_options, open_input,
                     pop_sink_options, runtime_kwargs, setup_logging, sink_options, start_stream, translate_errors)


@click.command()
@model_options
@click.option("--source", "-s", required=True,
              help="Image, video, folder, glob such as 'images/*.jpg' (quote it), http(s):// image URL, or stream URL.")
@click.option("--retina-masks", is_flag=True, help="Crop masks at full source resolution (slower, sharper edges).")
@sink_options("predict")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@translate_errors
def predict(**kw: Any) -> None:
    """Run a model on images, folders, globs, video files or image URLs; save annotated output and JSON.

    \b
    Example:
      edgeseg predict --model yolov8n-seg.onnx --source bus.jpg --save out.jpg --json out/results.json
      edgeseg predict -m n-seg.tflite -s 'photos/*.jpg' --conf 0.4 --classes 0 --json -
      edgeseg predict -m n-seg.onnx -s clip.mp4 --save out/        # every frame, annotated out/clip.mp4

    Outputs are opened before the first image and renamed into place at the end. An unreadable
    input is reported and skipped; the results of the others are written, and the command exits
    with status 1 at the end if any input failed.
    """
    from ..live.sinks import SinkContext
    from ..runtime import Runtime

    source, retina, quiet = kw.pop("source"), kw.pop("retina_masks"), kw.pop("quiet")
    setup_logging(False, list_skips_at_end=True)
    rt_kw = runtime_kwargs(kw)
    sink_opts = pop_sink_options(kw, "predict")
    with Runtime(retina_masks=retina, **rt_kw) as rt:
        src = open_input(source, {"live": False} if _is_stream(source) else {})
        ctx = SinkContext(command="predict", source_name=src.name, single_image=is_single_image(src),
                          model=str(rt.path))
        st = start_stream(rt, src, sink_opts, ctx, skip_errors=True)
        frames, detections = drive(st, src.total, "predict", quiet or (src.total or 0) < 2)
    echo_err(f"{frames} image(s)/frame(s), {detections} detection(s)"
             + (f"; annotated output in {sink_opts['save']}" if sink_opts.get("save") and frames else ""))
    failures = failures_of(st)
    echo_failures(failures)
    if failures:
        sys.exit(1)


def _is_stream(spec: str) -> bool:
    """A network stream (read every frame, to its end, as a file); image URLs are fetched instead."""
    from ..live.sources import classify

    return classify(spec) == "stream"
