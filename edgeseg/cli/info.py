"""``edgeseg info``: what the runtime understood about a model."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import click

from .common import parse_imgsz, translate_errors


@click.command()
@click.option("--model", "-m", default=None, type=click.Path(path_type=Path),
              help="Model file or export folder (default: the embedded demo model).")
@click.option("--backend", default="auto", show_default=True, help="Backend name or auto.")
@click.option("--imgsz", default=None, help="Input size for dynamic-shape models, 640 or H,W.")
@click.option("--names", "names_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Class names file overriding the model's.")
@click.option("--json", "as_json", is_flag=True, help="Print the full description as JSON.")
@translate_errors
def info(model: Any, backend: str, imgsz: Any, names_file: Any, as_json: bool) -> None:
    """Show a model's format, backend, input, output layout, class names and quantization.

    A model this machine cannot run (an Edge TPU model without libedgetpu, a TensorRT engine
    without TensorRT and a GPU) is described from its file, with the reason it was not loaded.

    \b
    Example:
      edgeseg info --model yolov8n-seg-640-int8w.tflite
      edgeseg info -m yolov8n-seg.onnx --json | jq .output_layout
    """
    import logging

    from ..errors import BackendUnavailableError, ModelLoadError
    from ..runtime import Runtime

    if model is None:
        from ..default_model import default_model

        model = default_model(backend)
    fb = _flatbuffer(model)
    runtime_log = logging.getLogger("edgeseg.runtime")
    level = runtime_log.level
    runtime_log.setLevel(logging.ERROR)  # the model's warnings are printed below, once
    try:
        with Runtime(model, backend=backend, imgsz=parse_imgsz(imgsz), names=names_file) as rt:
            d = rt.info
    except (BackendUnavailableError, ModelLoadError) as exc:
        engine = _engine_header(model) if isinstance(exc, BackendUnavailableError) else None
        if (fb is None or not fb.edgetpu) and engine is None:
            raise
        # an Edge TPU model or a TensorRT engine that cannot be loaded here, described from its file
        d = {"model": str(model), "runtime": f"not loaded: {exc}"}
        if engine is not None:
            d["engine"] = engine
    finally:
        runtime_log.setLevel(level)
    if fb is not None:
        d["tflite"] = fb.to_dict()
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    if "engine" in d:
        click.echo(_format_engine(d))
        return
    click.echo(_format(d) if "runtime" not in d else _format_file(d))
    if fb is not None:
        click.echo(_format_ops(d["tflite"]))
    if "runtime" not in d and model.suffix.lower() == ".tflite" and "quantization" in d["input"]:
        click.echo(_edgetpu_lines(model))
    for w in d.get("warnings", []):
        click.echo(f"warning      {w}")


def _flatbuffer(model: Path) -> Any:
    """The TFLite file as read by edgeseg itself (None for other formats)."""
    from ..tflite_file import read_tflite

    if model.suffix.lower() != ".tflite" or not model.is_file():
        return None
    return read_tflite(model)


def _engine_header(model: Path) -> Any:
    """A TensorRT engine's Ultralytics metadata header and plan size, read without TensorRT
    (None for other files)."""
    if model.suffix.lower() != ".engine" or not model.is_file():
        return None
    from ..runtimes.tensorrt import read_engine_header

    meta, offset = read_engine_header(model)
    size = model.stat().st_size
    return {"metadata": meta, "file_bytes": size, "plan_bytes": size - offset}


def _engine_precision(raw: Dict[str, Any]) -> Any:
    """fp32 / fp16 / int8 from an engine header: edgeseg's ``engine.precision`` or ``quantization``,
    Ultralytics' ``args.half`` / ``args.int8``; None when the header does not say."""
    engine, args = raw.get("engine"), raw.get("args")
    if isinstance(engine, dict) and engine.get("precision"):
        return engine["precision"]
    if raw.get("quantization"):
        return raw["quantization"]
    if isinstance(args, dict) and (args.get("int8") or args.get("half")):
        return "int8" if args.get("int8") else "fp16"
    return None


def _format_engine(d: Dict[str, Any]) -> str:
    """A TensorRT engine on a machine that cannot load it: what its metadata header says."""
    from ..metadata import parse_metadata

    e = d["engine"]
    meta = parse_metadata(e["metadata"], "engine header")
    raw = meta.raw
    lines = [f"model        {d['model']} ({e['file_bytes'] / 1e6:.1f} MB)",
             f"format       TensorRT engine, plan {e['plan_bytes'] / 1e6:.1f} MB, "
             + ("Ultralytics metadata header" if raw else "no metadata header (a bare plan)"),
             f"runtime      {d['runtime']}"]
    built = raw.get("engine") if isinstance(raw.get("engine"), dict) else {}
    fields = [("description", raw.get("description")), ("task", meta.task),
              ("imgsz", list(meta.imgsz) if meta.imgsz else None), ("batch", raw.get("batch")),
              ("precision", _engine_precision(raw)), ("stride", meta.stride if raw else None),
              ("built for", " ".join(f"{k} {built[k]}" for k in ("gpu", "tensorrt") if built.get(k)) or None)]
    lines += [f"{key:<12} {value}" for key, value in fields if value is not None]
    if meta.names:
        shown = ", ".join(f"{k}: {v}" for k, v in list(meta.names.items())[:8])
        lines.append(f"names        {len(meta.names)} classes ({shown}{', ...' if len(meta.names) > 8 else ''})")
    return "\n".join(lines)


def _tensor_line(kind: str, t: Dict[str, Any]) -> str:
    q = t.get("quantization")
    qs = ""
    if q and "scale" in q:
        qs = f" (scale {q['scale']:.6g}, zero point {q['zero_point']})"
    elif q:
        qs = f" (per-channel quantization, {q['per_channel']} channels)"
    return f"{kind:<12} {t['name']} {t['shape']} {t['dtype']}{qs}"


def _format_file(d: Dict[str, Any]) -> str:
    """A TFLite model the runtime could not load here (an Edge TPU model without libedgetpu)."""
    f = d["tflite"]
    size = Path(d["model"]).stat().st_size
    lines = [f"model        {d['model']} ({size / 1e6:.1f} MB)",
             f"format       tflite, compiled for the Edge TPU ({f['edgetpu_ops']} edgetpu-custom-op)",
             f"runtime      {d['runtime']}"]
    lines += [_tensor_line("input", t) for t in f["inputs"]]
    lines += [_tensor_line("output", t) for t in f["outputs"]]
    return "\n".join(lines)


def _format_ops(f: Dict[str, Any]) -> str:
    def counts(c: Dict[str, int]) -> str:
        return ", ".join(f"{k} x{v}" if v > 1 else k for k, v in sorted(c.items(), key=lambda kv: -kv[1])) or "none"

    total = sum(f["ops"].values())
    if f["edgetpu"]:
        cpu = sum(f["cpu_ops"].values())
        return (f"ops          {total}: {f['edgetpu_ops']} on the Edge TPU (edgetpu-custom-op), {cpu} CPU ops: "
                f"{counts(f['cpu_ops'])}")
    return f"ops          {total} (CPU; not compiled for the Edge TPU): {counts(f['ops'])}"


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
