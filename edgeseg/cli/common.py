"""Shared pieces of the CLI: error translation, common options, and the sink/stream steps that
``run`` and ``predict`` share."""
from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple, TypeVar

import click

from ..errors import EdgesegError

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str) -> "click.ClickException":
    """A clean CLI error (no traceback): ``raise fail("...")``."""
    return click.ClickException(message)


def translate_errors(func: F) -> F:
    """Decorator: turn :class:`EdgesegError` into a clean CLI error with exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except EdgesegError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper  # type: ignore[return-value]


def parse_imgsz(value: Optional[str]) -> Optional[tuple]:
    """``"640"`` -> (640, 640); ``"320,480"`` -> (320, 480) as (height, width)."""
    if value is None or value == "":
        return None
    try:
        parts = [int(p) for p in str(value).replace("x", ",").split(",") if p.strip()]
    except ValueError:
        raise click.BadParameter(f"expected an integer or H,W such as 640 or 320,480, got {value!r}")
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) <= 0:
        raise click.BadParameter(f"expected an integer or H,W such as 640 or 320,480, got {value!r}")
    return (parts[0], parts[1])


def parse_classes(value: Optional[str]) -> Optional[List[int]]:
    """``"0,2,5"`` -> [0, 2, 5]."""
    if not value:
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected class ids separated by commas such as 0,2,5, got {value!r}")


def model_options(func: F) -> F:
    """The options every command that builds a Runtime shares."""
    opts = [
        click.option("--model", "-m", default=None, type=click.Path(path_type=Path),
                     help="Model file or export folder (.onnx, .tflite, OpenVINO .xml/folder, ncnn .param/folder, .pt "
                          "with the convert extra). Default: the embedded demo model (synthetic shapes only; "
                          "real objects need your own model, see `edgeseg convert --help`)."),
        click.option("--backend", default="auto", show_default=True,
                     help="Backend name (onnxruntime, litert, openvino, ncnn, coreml, torch) or auto."),
        click.option("--threads", type=int, default=None, help="Inference threads (default: the backend's choice)."),
        click.option("--conf", type=float, default=0.25, show_default=True, help="Confidence threshold."),
        click.option("--iou", type=float, default=0.7, show_default=True, help="NMS IoU threshold."),
        click.option("--max-det", type=int, default=300, show_default=True, help="Maximum detections per image."),
        click.option("--imgsz", default=None, help="Inference size, 640 or H,W (default: the model's own size)."),
        click.option("--classes", default=None, help="Keep only these class ids, e.g. 0,2."),
        click.option("--names", "names_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                     help="Class names file (YAML list/dict, or one name per line) for models without metadata."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


def runtime_kwargs(kw: dict) -> dict:
    """Pop the shared model options from a command's kwargs into ``Runtime(...)`` arguments."""
    return dict(
        model=kw.pop("model"),
        backend=kw.pop("backend"),
        threads=kw.pop("threads"),
        conf=kw.pop("conf"),
        iou=kw.pop("iou"),
        max_det=kw.pop("max_det"),
        imgsz=parse_imgsz(kw.pop("imgsz")),
        classes=parse_classes(kw.pop("classes")),
        names=kw.pop("names_file"),
    )


def echo_err(message: str) -> None:
    click.echo(message, err=True)


def is_tty() -> bool:
    return sys.stderr.isatty()


# -- sinks and streams, shared by `run` and `predict` ------------------------------------------------

class _TqdmHandler(logging.Handler):
    """Log lines that do not tear the progress bar apart."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


class _NoSkipLines(logging.Filter):
    """``predict`` lists the inputs it skipped at the end: their per-file warnings are not repeated."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("skipping ")


def setup_logging(verbose: bool, list_skips_at_end: bool = False) -> None:
    """edgeseg's log lines on stderr as ``edgeseg: ...`` above the progress bar; OpenCV/FFmpeg quiet
    unless ``verbose``."""
    root = logging.getLogger("edgeseg")
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    if not any(isinstance(h, _TqdmHandler) for h in root.handlers):
        handler = _TqdmHandler()
        handler.setFormatter(logging.Formatter("edgeseg: %(message)s"))
        root.addHandler(handler)
        root.propagate = False
    for h in root.handlers:
        if isinstance(h, _TqdmHandler):
            for f in [f for f in h.filters if isinstance(f, _NoSkipLines)]:
                h.removeFilter(f)
            if list_skips_at_end:
                h.addFilter(_NoSkipLines())
    if not verbose:
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg's own chatter about dropped streams
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
        try:
            import cv2

            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        except Exception:  # pragma: no cover - very old OpenCV
            pass


def sink_options(command: str) -> Callable[[F], F]:
    """Decorator: the options of every sink that ``command`` offers, read from the sink registry
    (:func:`edgeseg.live.sinks.sink_specs`), so a new sink module adds its options here by itself."""

    def decorate(func: F) -> F:
        from ..live.sinks import per_command, sink_specs

        options = [o for spec in sink_specs(command) for o in spec.options]
        for o in reversed(options):
            kind: Any = o.type
            if o.choices:
                kind = click.Choice(list(o.choices))
            elif o.range:
                kind = click.IntRange(*o.range)
            default = per_command(o.default, command)
            attrs: dict = dict(help=per_command(o.help, command), metavar=per_command(o.metavar, command))
            if o.is_flag:
                attrs.update(is_flag=True)
            else:
                attrs.update(type=kind, default=default, show_default=default is not None)
            if o.envvar:
                attrs["envvar"] = o.envvar
            func = click.option(o.flag, o.dest, **attrs)(func)
        return func

    return decorate


def pop_sink_options(kw: dict, command: str) -> dict:
    """Pop the registered sinks' option values from a command's kwargs."""
    from ..live.sinks import sink_specs

    return {o.dest: kw.pop(o.dest, None) for spec in sink_specs(command) for o in spec.options}


def start_sinks(options: dict, context: Any) -> List[Any]:
    """Build the sinks the options ask for and open them all, before the first frame is read: a
    failed start (a missing extra, an unwritable path, a port in use) raises one edgeseg error and
    leaves existing outputs as they were."""
    from ..live.sinks import build_sinks, open_sinks

    sinks = build_sinks(options, context)
    open_sinks(sinks)
    return sinks


def drive(st: Any, total: Optional[int], desc: str, quiet: bool) -> Tuple[int, int]:
    """Iterate a stream with a progress bar (stderr); returns (frames, detections). Ctrl-C twice
    exits with status 130 after the outputs are closed."""
    bar = None
    if not quiet:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="frame", desc=desc, file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
    frames = detections = 0
    try:
        for res in st:
            frames += 1
            detections += len(res)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(det=len(res), age_ms=f"{res.speed.get('frame_age', 0):.0f}",
                                inf_ms=f"{res.speed.get('inference', 0):.0f}", refresh=False)
    except KeyboardInterrupt:
        raise SystemExit(130)
    finally:
        if bar is not None:
            bar.close()
    return frames, detections


def failures_of(st: Any) -> List[Tuple[str, str]]:
    """Every input a stream skipped: files its source could not read, frames a stage rejected."""
    return list(getattr(st.source, "failures", [])) + list(getattr(st, "failures", []))


def echo_failures(failures: List[Tuple[str, str]]) -> None:
    """List skipped inputs on stderr, each path once."""
    if not failures:
        return
    echo_err(f"{len(failures)} input(s) failed:")
    for path, why in failures:
        echo_err(f"  {why}" if path in why else f"  {path}: {why}")


def open_input(spec: Any, options: dict) -> Any:
    """Open what ``--source``/``--camera`` names (:func:`edgeseg.live.sources.open_source`)."""
    from ..live.sources import open_source

    return open_source(spec, **options)


def is_single_image(src: Any) -> bool:
    """Whether a source is one image (``--save out.jpg`` then writes that file)."""
    from ..io import IMAGE_SUFFIXES

    paths = getattr(src, "paths", None)
    if paths is not None:
        return len(paths) == 1 and Path(paths[0]).suffix.lower() in IMAGE_SUFFIXES
    return type(src).__name__ == "UrlImageSource"


def start_stream(runtime: Any, src: Any, sink_options: dict, context: Any, **stream_kw: Any) -> Any:
    """Build and open the sinks (before any frame is read), then start the stream with signal
    handling. On a failed start everything opened is closed again (the source too) and the error is
    raised: existing outputs are untouched."""
    from ..live.pipeline import stream

    try:
        sinks = start_sinks(sink_options, context)
    except BaseException:
        src.close()
        raise
    try:
        return stream(runtime, src, sinks=sinks, handle_signals=True, **stream_kw)
    except BaseException:
        from ..live.sinks import close_sinks

        close_sinks(sinks)
        src.close()
        raise
