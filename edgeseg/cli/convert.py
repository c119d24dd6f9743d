"""``edgeseg convert``: a checkpoint to any registered export format (needs the convert extra).

The ``--to`` choices, the format table in ``--help`` and the format options (``--half``,
``--opset``...) come from the exporter registry (:mod:`edgeseg.converters.export.registry`, no
torch import), so a new exporter module shows up here without touching this file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import click

from ..converters.export.registry import Exporter, Option, export_options, exporters, option_help
from .common import fail, parse_imgsz, translate_errors

_EXAMPLE = "yolov8n-seg"

_HELP = """Export a YOLOv8-seg / YOLO11-seg checkpoint to a deployable format.

MODEL is an Ultralytics .pt checkpoint (Ultralytics itself is not needed) or an edgeseg
checkpoint (.pt / .safetensors). The artifact keeps the raw YOLO outputs (output0, output1)
and carries metadata (class names, imgsz, stride, task, precision, source sha256) where its
format keeps it, so `edgeseg predict` and Ultralytics tools read it.

\b
Formats (--to), what they write from yolov8n-seg.pt, what runs them:
{formats}

\b
Example:
  edgeseg convert yolov8n-seg.pt --to onnx --imgsz 320
  edgeseg convert yolov8n-seg.pt --to openvino --half --out models/n-seg_openvino_model
  edgeseg convert yolov8n-seg.pt --board raspberry-pi-5      # the board's format, size, precision
  edgeseg verify yolov8n-seg.pt yolov8n-seg.onnx --images photos/
"""


def format_table(table: "dict[str, Exporter]") -> str:
    """The ``--help`` lines of every export format (two lines each)."""
    width = max(len(n) for n in table) + 2
    lines = []
    for name, exp in table.items():
        art = exp.artifact(_EXAMPLE) + ("/" if exp.folder else "")
        contents = exp.contents.replace("<name>", _EXAMPLE)
        lines.append(f"  {name:<{width}} {art}" + (f" ({contents})" if contents else ""))
        runs = f"; runs with {exp.backend}" if exp.backend else ""
        lines.append(f"  {'':<{width}} {exp.description}{runs}; {', '.join(exp.precisions)}")
    return "\n".join(lines)


def _format_option(opt: Option) -> Callable[[Any], Any]:
    help_text = option_help(opt.name)
    if opt.type is bool:
        return click.option(opt.flag, opt.name, is_flag=True, default=False, help=help_text)
    kind = click.Path(path_type=Path) if opt.type is Path else opt.type
    return click.option(opt.flag, opt.name, type=kind, default=None, metavar=opt.metavar or None, help=help_text)


def _with_format_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for opt, _ in reversed(list(export_options().values())):
        func = _format_option(opt)(func)
    return func


@click.command(help=_HELP.format(formats=format_table(exporters())))
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--to", "fmt", type=click.Choice(list(exporters())), default=None,
              help="Target format (default: onnx, or the board's format with --board).")
@click.option("--board", default=None, help="Apply a board profile (see `edgeseg boards`): its format, input size and "
              "precision; explicit --to/--imgsz/--half win.")
@click.option("--imgsz", default=None, help="Input size, 640 or H,W (e.g. 320,480); default: the checkpoint's training size.")
@_with_format_options
@click.option("--out", "-o", type=click.Path(path_type=Path), default=None,
              help="Output file, or folder for folder formats; default: beside MODEL.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@translate_errors
def convert(model: Path, fmt: Optional[str], board: Optional[str], imgsz: Optional[str], out: Optional[Path],
            quiet: bool, **options: Any) -> None:
    from ..backend import module_available
    from ..io import path_size

    if not module_available("torch"):
        raise fail("edgeseg convert needs PyTorch, which is not installed; install it with: pip install 'edgeseg[convert]'")
    from ..converters import export

    hw = parse_imgsz(imgsz)
    if board is not None:
        from ..tools.profiles import convert_options, get_profile

        explicit = {"to": fmt, "imgsz": hw, **options}
        opts = convert_options(get_profile(board), explicit)
        fmt, hw = opts.pop("to"), opts.pop("imgsz")
        options.update(opts)
        flags = "".join(f" --{k.replace('_', '-')}" for k, v in opts.items() if v is True)
        click.echo(f"board {board}: --to {fmt} --imgsz {hw if isinstance(hw, int) else ','.join(map(str, hw))}"
                   + flags, err=True)
    fmt = fmt or "onnx"
    path = export(model, to=fmt, imgsz=hw, out=out, progress=not quiet, **options)
    given = [k for k, v in options.items() if v is True]
    click.echo(f"Exported {model} -> {path} ({fmt}, {path_size(path) / 1e6:.1f} MB"
               + "".join(f", {'fp16' if k == 'half' else k}" for k in given) + ")")
    click.echo(f"Check it against the source: edgeseg verify {model} {path} --images IMAGES_DIR")
