"""Shared pieces of the CLI: error translation and common options."""
from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional, TypeVar

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
        click.option("--model", "-m", required=True, type=click.Path(path_type=Path),
                     help="Model file or export folder (.onnx, .tflite, OpenVINO .xml/folder, ncnn .param/folder, .pt with the convert extra)."),
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
