"""``edgeseg run``: the live pipeline on a camera, video, folder or stream, with sinks."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import click

from .common import echo_err, model_options, runtime_kwargs, translate_errors
from .tracking_options import tracking_kwargs, tracking_options, tracking_summary_lines

log = logging.getLogger("edgeseg.run")


class _TqdmHandler(logging.Handler):
    """Log lines that do not tear the progress bar apart."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def _setup_logging(verbose: bool) -> None:
    root = logging.getLogger("edgeseg")
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    if not any(isinstance(h, _TqdmHandler) for h in root.handlers):
        handler = _TqdmHandler()
        handler.setFormatter(logging.Formatter("edgeseg: %(message)s"))
        root.addHandler(handler)
        root.propagate = False
    if not verbose:
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg's own chatter about dropped streams
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
        try:
            import cv2

            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        except Exception:  # pragma: no cover - very old OpenCV
            pass


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
@click.option("--save", "save", default=None, metavar="OUT.mp4|DIR",
              help="Save annotated frames: a video file (.mp4/.avi/.mkv) or a folder of JPEGs.")
@click.option("--save-fps", type=float, default=None, help="Frame rate of the saved video (default: the source's).")
@click.option("--json", "json_out", default=None, metavar="FILE|-", help="Write one JSON line per frame (- for stdout).")
@click.option("--masks", "masks_format", type=click.Choice(["polygon", "rle", "none"]), default="polygon",
              show_default=True, help="How masks appear in --json and --mqtt records.")
@click.option("--serve", default=None, metavar="[HOST:]PORT",
              help="Serve a live page with the annotated view and stats (binds 127.0.0.1 unless HOST is given).")
@click.option("--token", default=None, envvar="EDGESEG_TOKEN",
              help="Require this token for --serve (?token=..., or env EDGESEG_TOKEN).")
@click.option("--mqtt", default=None, metavar="mqtt://HOST[:PORT]/TOPIC",
              help="Publish one JSON message per frame to an MQTT broker (extra 'mqtt').")
@click.option("--mqtt-on-change", is_flag=True,
              help="With --mqtt: publish only when the detected classes/counts (or line/zone counts) change.")
@click.option("--mqtt-qos", type=click.IntRange(0, 2), default=0, show_default=True, help="MQTT quality of service.")
@click.option("--show", is_flag=True, help="Show an OpenCV window (needs OpenCV with GUI support and a display).")
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
    skipped, so the lag never grows); a stream that drops is reconnected. Ctrl-C or SIGTERM stop
    cleanly: saved videos and JSON files are finalized.

    \b
    Example:
      edgeseg run --model yolov8n-seg.tflite --camera 0 --serve 8080
      edgeseg run -m n-seg.onnx -s clip.mp4 --save out.mp4 --json out.jsonl
      edgeseg run -m n-seg.onnx -s rtsp://cam.local/stream --mqtt mqtt://localhost/edgeseg/cam1 --mqtt-on-change
      edgeseg run -m n-seg.onnx --board auto --camera 0 --serve 0.0.0.0:8080 --token SECRET
      edgeseg run -m n-seg.onnx -s clip.mp4 --track --count-line door=0,400,1280,400 --json out.jsonl
    """
    from ..errors import InputError
    from ..live.pipeline import stream
    from ..runtime import Runtime
    from ..live.sinks import MASK_FORMATS, JsonSink, MqttSink, ServeSink, ShowSink, save_sink
    from ..live.sources import open_source

    _setup_logging(kw.pop("verbose"))
    quiet = kw.pop("quiet")
    rt_kw = runtime_kwargs(kw)
    track_kw = tracking_kwargs(kw)
    camera, source = kw.pop("camera"), kw.pop("source")
    if camera is not None and source is not None:
        raise InputError("give either --camera or --source, not both")
    cam = {"width": kw.pop("width"), "height": kw.pop("height"), "fps": kw.pop("fps")}
    explicit = {"backend": rt_kw["backend"], "threads": rt_kw["threads"], "imgsz": rt_kw["imgsz"],
                "camera": dict(cam, source=camera if camera is not None else source)}
    board = kw.pop("board")
    applied = _board(board, explicit, rt_kw["model"])
    if board:
        cam_applied = applied.get("camera", {})
        if camera is None and source is None and cam_applied.get("source") is not None:
            camera = str(cam_applied["source"])
            from ..live.sources import picamera_available

            if cam_applied.get("picamera2") and picamera_available():
                camera = "picamera"  # the board's camera module, through libcamera
        if camera is not None:  # camera defaults apply to cameras only, never to files or streams
            cam = {k: cam_applied.get(k) for k in ("width", "height", "fps")}
        rt_kw["backend"] = applied.get("backend", rt_kw["backend"])
        rt_kw["threads"] = applied.get("threads", rt_kw["threads"])
        log.info("board %s: backend %s, threads %s, backend options %s, camera %s", applied.get("board"),
                 rt_kw["backend"], rt_kw["threads"] or "auto", applied.get("backend_options") or {},
                 {k: v for k, v in cam.items() if v is not None} if camera is not None else "not used")
    if camera is None and source is None:
        raise InputError("no input: give --camera N or --source PATH|URL (or --board with a camera default)")

    # 1) the model, 2) the source (so a bad source fails before servers start), 3) the sinks
    backend_options = applied.get("backend_options", {}) if board else {}
    board_imgsz = applied.get("imgsz") if board and rt_kw["imgsz"] is None else None
    runtime = _make_runtime(Runtime, rt_kw, backend_options, board_imgsz)
    sinks: List[Any] = []
    src = None
    try:
        spec = camera if camera is not None else source
        src_kw: Dict[str, Any] = {"reconnect_timeout": kw.pop("reconnect_timeout")}
        if camera is not None:
            src_kw.update({k: v for k, v in cam.items() if v is not None})
        every = kw.pop("every_frame")
        if every and camera is None:
            src_kw["live"] = False
        src = open_source(spec, **src_kw)
        masks = MASK_FORMATS[kw.pop("masks_format")]
        if kw["save"]:
            sinks.append(save_sink(kw["save"], fps=kw["save_fps"]))
        if kw["json_out"]:
            sinks.append(JsonSink(kw["json_out"], masks=masks))
        if kw["serve"] is not None:
            serve_sink = ServeSink(kw["serve"], token=kw["token"], source_name=src.name)
            sinks.append(serve_sink)
            echo_err(f"edgeseg: live view at {serve_sink.url}")
        elif kw["token"]:
            raise InputError("--token is for --serve; add --serve [HOST:]PORT")
        if kw["mqtt"]:
            sinks.append(MqttSink(kw["mqtt"], on_change=kw["mqtt_on_change"], masks=masks, qos=kw["mqtt_qos"]))
        elif kw["mqtt_on_change"]:
            raise InputError("--mqtt-on-change needs --mqtt mqtt://HOST/TOPIC")
        if kw["show"]:
            sinks.append(ShowSink())
    except BaseException:
        for s in sinks:
            try:
                s.close()
            except Exception:
                pass
        if src is not None:
            src.close()
        runtime.close()
        raise

    st = stream(runtime, src, sinks=sinks, max_frames=kw["max_frames"], pipelined=not kw["no_pipeline"],
                handle_signals=True, **track_kw)
    total = src.total
    if total is not None and kw["max_frames"]:
        total = min(total, kw["max_frames"])
    elif total is None and kw["max_frames"] and src.live:
        total = kw["max_frames"]
    bar = None
    if not quiet:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="frame", desc="edgeseg run", file=sys.stderr, dynamic_ncols=True,
                   mininterval=0.5)
    try:
        for res in st:
            if bar is not None:
                bar.update(1)
                bar.set_postfix(det=len(res), age_ms=f"{res.speed.get('frame_age', 0):.0f}",
                                inf_ms=f"{res.speed.get('inference', 0):.0f}", refresh=False)
    except KeyboardInterrupt:
        raise SystemExit(130)
    finally:
        if bar is not None:
            bar.close()
        runtime.close()
    summary = st.summary()
    if not quiet:
        echo_err("edgeseg: " + ("stopped by signal; " if st.signalled else "") + _summary_line(summary))
        for line in tracking_summary_lines(st):
            echo_err("edgeseg: " + line)
        for s in sinks:
            if isinstance(s, MqttSink):
                echo_err(f"edgeseg: MQTT {s.url}: {s.sent} sent, {s.dropped} dropped, {s.unchanged} unchanged")
            if getattr(s, "frames", None) is not None and hasattr(s, "path"):
                echo_err(f"edgeseg: saved {s.frames} frames to {s.path}")
            if getattr(s, "folder", None) is not None:
                echo_err(f"edgeseg: saved {s.frames} frames in {s.folder}")


def _make_runtime(Runtime: Any, rt_kw: Dict[str, Any], backend_options: Dict[str, Any],
                  board_imgsz: Optional[int]) -> Any:
    """Build the Runtime; a board's input size applies only to models whose input size is not fixed."""
    rt = Runtime(**rt_kw, **backend_options)
    if board_imgsz and rt.fixed_imgsz is None:
        return rt.with_options(imgsz=board_imgsz)  # same loaded model, letterboxed to the board's size
    if board_imgsz:
        log.info("board input size %s not used: the model's input is fixed at %sx%s", board_imgsz, *rt.fixed_imgsz)
    return rt
