"""``edgeseg convert``: a checkpoint to ONNX, OpenVINO IR, TorchScript or ncnn (needs the convert extra)."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

import click

from .common import fail, parse_imgsz, translate_errors

try:  # light module, no torch; absent only in a broken install
    from ..converters.formats import EXPORT_FORMATS
except ImportError:  # pragma: no cover
    EXPORT_FORMATS = {"onnx": (".onnx", ""), "openvino": ("_openvino_model", ""), "torchscript": (".torchscript", "")}


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--to", "fmt", type=click.Choice(list(EXPORT_FORMATS)), default=None,
              help="Target format (default: onnx, or the board's format with --board).")
@click.option("--board", default=None, help="Apply a board profile (see `edgeseg boards`): its format, input size and "
              "precision; explicit --to/--imgsz/--half win.")
@click.option("--imgsz", default=None, help="Input size, 640 or H,W (e.g. 320,480); default: the checkpoint's training size.")
@click.option("--half", is_flag=True, help="fp16 weights (ONNX keeps float32 input/outputs; OpenVINO compresses weights).")
@click.option("--dynamic", is_flag=True, help="Dynamic batch, height and width.")
@click.option("--opset", type=int, default=None, help="ONNX opset (default 17; 18+ uses torch's dynamo exporter).")
@click.option("--simplify", is_flag=True, help="Simplify the ONNX graph with onnxslim.")
@click.option("--out", "-o", type=click.Path(path_type=Path), default=None,
              help="Output file (ONNX/TorchScript) or folder (OpenVINO/ncnn); default: beside MODEL.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@translate_errors
def convert(model: Path, fmt: Optional[str], board: Optional[str], imgsz: Optional[str], half: bool, dynamic: bool,
            opset: Optional[int], simplify: bool, out: Optional[Path], quiet: bool) -> None:
    """Export a YOLOv8-seg / YOLO11-seg checkpoint to a deployable format.

    MODEL is an Ultralytics .pt checkpoint (Ultralytics itself is not needed) or an edgeseg
    checkpoint (.pt / .safetensors). The artifact keeps the raw YOLO outputs (output0, output1)
    and carries metadata (class names, imgsz, stride, task, precision, source sha256) where its
    format keeps it, so `edgeseg predict` and Ultralytics tools read it.

    \b
    Formats:
      onnx         yolov8n-seg.onnx
      openvino     yolov8n-seg_openvino_model/ (yolov8n-seg.xml, .bin, metadata.yaml)
      torchscript  yolov8n-seg.torchscript
      ncnn         yolov8n-seg_ncnn_model/ (yolov8n-seg.ncnn.param, .ncnn.bin, metadata.yaml)

    \b
    Example:
      edgeseg convert yolov8n-seg.pt --to onnx --imgsz 320
      edgeseg convert yolov8n-seg.pt --to openvino --half --out models/n-seg_openvino_model
      edgeseg convert yolov8n-seg.pt --board raspberry-pi-5      # ncnn, 416 px, fp16
      edgeseg verify yolov8n-seg.pt yolov8n-seg.onnx --images photos/
    """
    if importlib.util.find_spec("torch") is None:
        raise fail("edgeseg convert needs PyTorch, which is not installed; install it with: pip install 'edgeseg[convert]'")
    from ..converters import export

    hw = parse_imgsz(imgsz)
    if board is not None:
        from ..tools.profiles import convert_options, get_profile

        opts = convert_options(get_profile(board), {"to": fmt, "imgsz": hw, "half": half})
        fmt, hw, half = opts["to"], opts["imgsz"], opts["half"]
        click.echo(f"board {board}: --to {fmt} --imgsz {hw if isinstance(hw, int) else ','.join(map(str, hw))}"
                   + (" --half" if half else ""), err=True)
    fmt = fmt or "onnx"
    path = export(model, to=fmt, imgsz=hw, half=half, dynamic=dynamic, opset=opset, simplify=simplify, out=out,
                  progress=not quiet)
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    click.echo(f"Exported {model} -> {path} ({fmt}, {size / 1e6:.1f} MB{', fp16' if half else ''}{', dynamic' if dynamic else ''})")
    click.echo(f"Check it against the source: edgeseg verify {model} {path} --images IMAGES_DIR")
