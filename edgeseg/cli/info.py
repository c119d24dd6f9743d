"""``edgeseg info``: what the runtime understood about a model."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import click

from .common import parse_imgsz, translate_errors


@click.command()
@click.option("--model", "-m", required=True, type=click.Path(path_type=Path), help="Model file or export folder.")
@click.option("--backend", default="auto", show_default=True, help="Backend name or auto.")
@click.option("--imgsz", default=None, help="Input size for dynamic-shape models, 640 or H,W.")
@click.option("--names", "names_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Class names file overriding the model's.")
@click.option("--json", "as_json", is_flag=True, help="Print the full description as JSON.")
@translate_errors
def info(model: Path, backend: str, imgsz: Any, names_file: Any, as_json: bool) -> None:
    """Show a model's format, backend, input, output layout, class names and quantization.

    \b
    Example:
      edgeseg info --model yolov8n-seg-640-int8w.tflite
      edgeseg info -m yolov8n-seg.onnx --json | jq .output_layout
    """
    from ..runtime import Runtime

    with Runtime(model, backend=backend, imgsz=parse_imgsz(imgsz), names=names_file) as rt:
        d = rt.info
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    click.echo(_format(d))
    if model.suffix.lower() == ".tflite" and "quantization" in d["input"]:
        click.echo(_edgetpu_lines(model))


def _edgetpu_lines(model: Path) -> str:
    """For an integer-input TFLite model: which ops the Edge TPU would map and which fall back to the CPU."""
    try:
        from ..converters.export._litert import edgetpu_check
        from ..converters.export.edgetpu import op_summary
    except ImportError as exc:  # pragma: no cover - converters are part of the package
        return f"edge tpu     op check unavailable: {exc}"
    return "edge tpu     " + op_summary(edgetpu_check(model)).replace("\n", "\n             ")


def _format(d: Dict[str, Any]) -> str:
    inp = d["input"]
    lay = d["output_layout"]
    q = d["quantization"]
    lines = [
        f"model        {d['model']} ({d['size_bytes'] / 1e6:.1f} MB)",
        f"format       {d['format']}  (backend: {d['backend']})",
        f"task         {d['task']}",
        f"input        {inp['name']} {inp['shape']} {inp['dtype']} {inp['layout']}, {inp['color']}, "
        f"{inp['letterbox']} letterbox to {inp['imgsz'][0]}x{inp['imgsz'][1]}",
    ]
    if "quantization" in inp:
        lines.append(f"             input quantization: scale {inp['quantization']['scale']:.6g}, zero point {inp['quantization']['zero_point']}")
    lines.append(f"layout       {lay['kind']}: {lay['num_classes']} classes, {lay['mask_dim']} mask coefficients, boxes {lay['boxes']}")
    if "predictions" in lay:
        lines.append(f"             predictions: {lay['predictions']['name']} ({lay['predictions']['order']})")
    for role, name in lay.get("split", {}).items():
        lines.append(f"             {role}: {name}")
    if "protos" in lay:
        lines.append(f"             protos: {lay['protos']['name']} ({lay['protos']['layout']})")
    for o in d["outputs"]:
        qd = o.get("quantization")
        lines.append(f"output       {o['name']} {o['shape']} {o['dtype']}" + (f" (scale {qd['scale']:.6g}, zero point {qd['zero_point']})" if qd else ""))
    lines.append(f"quantization {q['summary']}")
    meta = d["metadata"]
    lines.append(f"metadata     {meta['source']}")
    names = d["names"]
    shown = ", ".join(f"{k}:{v}" for k, v in list(names.items())[:8])
    lines.append(f"names        {len(names)} classes: {shown}{', ...' if len(names) > 8 else ''}")
    details = ", ".join(f"{k}={v}" for k, v in d["backend_details"].items() if k != "weights")  # shown above
    if details:
        lines.append(f"backend      {details}")
    return "\n".join(lines)
