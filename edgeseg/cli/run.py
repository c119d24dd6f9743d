"""``edgeseg run``: the live pipeline on a camera, video, folder or stream, with sinks."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import click

from .common import (drive, echo_err, echo_failures, failures_of, is_single_image, model_options, open_input,
                     pop_sink_options, runtime_kwargs, setup_logging, sink_options, start_stream, translate_errors)
from .tracking_options import tracking_kwargs, tracking_options, tracking_summary_lines

log = logging.getLogger("edgeseg.run")


def _board(board: Optional[str], explicit: Dict[str, Any], model: Path) -> Dict[str, Any]:
    """Apply ``--board auto|NAME`` under the explicit options (explicit wins)."""
    if not board:
        return {k: v for k, v in explicit.items() if v is not None}
    from ..errors import InputError
    from ..tools.profiles import apply_profile, detect, get_profile

    if board == "auto":
        found = detect()
        if found is None:
            raise InputError("--board auto: no board profile matches this machine (see `edgeseg boards --detect`)")
        profile = found.profile
        log.warning("board detected: %s (%s)", profile.name, profile.title)
    else:
        profile = get_profile(board)
    return apply_profile(profile, explicit, model=model)


def _summary_line(summary: Dict[str, Any]) -> str:
    ms = summary.get("ms", {})
    order = ("read", "preprocess", "inference", "postprocess", "track", "sinks", "frame_age")
    stages = ", ".join(f"{k} {ms[k]['median']:.1f}" for k in order if k in ms)
    src = summary.get("source", {})
    extra = []
    if src.get("dropped"):
        extra.append(f"{src['dropped']} frames skipped to stay live")
    if src.get("reconnects"):
        extra.append(f"{src['reconnects']} reconnects")
    if src.get("skipped"):
        extra.append(f"{src['skipped']} unreadable files skipped")
    return (f"{summary['frames']} frames in {summary['seconds']:.1f}s ({summary['fps']:.1f} FPS); median ms: {stages}"
            + (f"; {'; '.join(extra)}" if extra else ""))


@click.command("run")
@model_options
@click.option("--camera", default=None, metavar="N|DEVICE",
              help="Camera index (0) or device (/dev/video2), read with V4L2 on Linux.")
@click.option("--source", "-s", default=None, metavar="SOURCE",
              help="Video file, image file/folder/glob, rtsp:// or http(s):// stream, 'picamera', or a GStreamer pipeline.")
@click.option("--width", type=int, default=None, help="Camera capture width.")
@click.option("--height", type=int, default=None, help="Camera capture height.")
@click.option("--fps", type=float, default=None, help="Camera capture frame rate.")
@click.option("--every-frame", is_flag=True,
              help="Read streams/cameras in order without skipping frames (lags when inference is slower).")
@click.option("--reconnect-timeout", type=float, default=None, metavar="SECONDS",
              help="Give up when a lost stream is not back after this long (default: keep trying).")
@sink_options("run")
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="Stop after this many frames.")
@click.option("--board", default=None, metavar="auto|NAME",
              help="Apply a board profile (backend, threads, options, camera defaults); explicit flags win.")
@click.option("--no-pipeline", is_flag=True, help="Run the stages one after another in one thread (for comparison).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
@click.option("--verbose", "-v", is_flag=True, help="Log more (connections, saved files, OpenCV/FFmpeg messages).")
@tracking_options
@translate_errors
def run(**kw: Any) -> None:
    """Run a model live on a camera, video, image folder or network stream.

    Frames are captured, preprocessed, inferred, postprocessed and written by the sinks in
    overlapping threads. Cameras and streams always process the newest frame (older ones are
    skipped, so the lag never grows); a stream that drops is reconnected. Ctrl-C, SIGTERM or
    SIGHUP stop cleanly: saved videos and JSON files are finalized. Every output is opened and
    checked before the first frame, so a failed start leaves existing files as they were.

    \b
    Example:
      edgeseg run --model yolov8n-seg.tflite --camera 0 --serve 8080
      edgeseg run -m n-seg.onnx -s clip.mp4 --save out.mp4 --json out.jsonl
      edgeseg run -m n-seg.onnx -s rtsp://cam.local/stream --mqtt mqtt://localhost/edgeseg/cam1 --mqtt-on-change
      edgeseg run -m n-seg.onnx --board auto --camera 0 --serve 0.0.0.0:8080 --token SECRET
      edgeseg run -m n-seg.onnx -s clip.mp4 --track --count-line door=0,400,1280,400 --json out.jsonl
    """
    from ..live.sinks import SinkContext

    setup_logging(kw.pop("verbose"))
    quiet, max_frames, pipelined = kw.pop("quiet"), kw.pop("max_frames"), not kw.pop("no_pipeline")
    rt_kw = runtime_kwargs(kw)
    track_kw = tracking_kwargs(kw)
    spec, src_kw, backend_options, board_imgsz = _resolve_input(kw, rt_kw)
    sink_opts = pop_sink_options(kw, "run")
    from ..runtime import Runtime

    runtime = _make_runtime(Runtime, rt_kw, backend_options, board_imgsz)
    try:
        src = open_input(spec, src_kw)
        ctx = SinkContext(command="run", source_name=src.name, single_image=is_single_image(src),
                          model=str(runtime.path))
        st = start_stream(runtime, src, sink_opts, ctx, max_frames=max_frames, pipelined=pipelined, **track_kw)
        for s in st.sinks:
            if getattr(s, "server", None) is not None:
                echo_err(f"edgeseg: live view at {s.url}")
        drive(st, _total(src, max_frames), "edgeseg run", quiet)
    finally:
        runtime.close()
    failures = failures_of(st)
    if not quiet:
        echo_err("edgeseg: " + ("stopped by signal; " if st.signalled else "") + _summary_line(st.summary()))
        for line in tracking_summary_lines(st):
            echo_err(f"edgeseg: {line}")
        for line in _sink_lines(st.sinks):
            echo_err(f"edgeseg: {line}")
    echo_failures(failures)  # even with -q: these are errors


def _resolve_input(kw: Dict[str, Any], rt_kw: Dict[str, Any]) -> Tuple[Any, Dict[str, Any], Dict[str, Any], Optional[int]]:
    """``--camera``/``--source``/``--board`` -> (source spec, open_source options, backend options,
    board input size). Updates ``rt_kw`` with the board's backend and threads."""
    from ..errors import InputError

    camera, source = kw.pop("camera"), kw.pop("source")
    if camera is not None and source is not None:
        raise InputError("give either --camera or --source, not both")
    cam = {"width": kw.pop("width"), "height": kw.pop("height"), "fps": kw.pop("fps")}
    explicit = {"backend": rt_kw["backend"], "threads": rt_kw["threads"], "imgsz": rt_kw["imgsz"],
                "camera": dict(cam, source=camera if camera is not None else source)}
    board = kw.pop("board")
    applied = _board(board, explicit, rt_kw["model"])
    if board:
        camera, cam = _board_camera(applied, camera, source, cam)
        rt_kw["backend"] = applied.get("backend", rt_kw["backend"])
        rt_kw["threads"] = applied.get("threads", rt_kw["threads"])
        log.info("board %s: backend %s, threads %s, backend options %s, camera %s", applied.get("board"),
                 rt_kw["backend"], rt_kw["threads"] or "auto", applied.get("backend_options") or {},
                 {k: v for k, v in cam.items() if v is not None} if camera is not None else "not used")
    if camera is None and source is None:
        raise InputError("no input: give --camera N or --source PATH|URL (or --board with a camera default)")
    src_kw: Dict[str, Any] = {"reconnect_timeout": kw.pop("reconnect_timeout")}
    if camera is not None:
        src_kw.update({k: v for k, v in cam.items() if v is not None})
    if kw.pop("every_frame") and camera is None:
        src_kw["live"] = False
    backend_options = applied.get("backend_options", {}) if board else {}
    board_imgsz = applied.get("imgsz") if board and rt_kw["imgsz"] is None else None
    return (camera if camera is not None else source), src_kw, backend_options, board_imgsz


def _board_camera(applied: Dict[str, Any], camera: Any, source: Any,
                  cam: Dict[str, Any]) -> Tuple[Any, Dict[str, Any]]:
    """The board profile's camera, when no input was given; its mode applies to cameras only."""
    cam_applied = applied.get("camera", {})
    if camera is None and source is None and cam_applied.get("source") is not None:
        camera = str(cam_applied["source"])
        from ..live.sources import picamera_available

        if cam_applied.get("picamera2") and picamera_available():
            camera = "picamera"  # the board's camera module, through libcamera
    if camera is not None:  # camera defaults apply to cameras only, never to files or streams
        cam = {k: cam_applied.get(k) for k in ("width", "height", "fps")}
    return camera, cam


def _total(src: Any, max_frames: Optional[int]) -> Optional[int]:
    total = src.total
    if total is not None and max_frames:
        return min(total, max_frames)
    if total is None and max_frames and src.live:
        return max_frames
    return total


def _sink_lines(sinks: List[Any]) -> List[str]:
    """One line per sink that counts what it did."""
    from ..live.sinks import FramesSink, MqttSink

    lines = []
    for s in sinks:
        if isinstance(s, MqttSink):
            lines.append(f"MQTT {s.url}: {s.sent} sent, {s.dropped} dropped, {s.unchanged} unchanged")
        elif isinstance(s, FramesSink):
            lines.append(f"saved {s.frames} frames in {s.folder}")
        elif getattr(s, "frames", None) is not None and hasattr(s, "path"):
            lines.append(f"saved {s.frames} frames to {s.path}" if s.frames else f"nothing saved to {s.path}")
    return lines


def _make_runtime(Runtime: Any, rt_kw: Dict[str, Any], backend_options: Dict[str, Any],
                  board_imgsz: Optional[int]) -> Any:
    """Build the Runtime; a board's input size applies only to models whose input size is not fixed."""
    rt = Runtime(**rt_kw, **backend_options)
    if board_imgsz and rt.fixed_imgsz is None:
        return rt.with_options(imgsz=board_imgsz)  # same loaded model, letterboxed to the board's size
    if board_imgsz:
        log.info("board input size %s not used: the model's input is fixed at %sx%s", board_imgsz, *rt.fixed_imgsz)
    return rt
