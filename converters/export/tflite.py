"""TFLite: ``<name>.tflite`` through litert-torch (NHWC float input ``(1, H, W, 3)``), with the
metadata zip appended as Ultralytics does (``metadata.json``), so Ultralytics' tools and edgeseg
both read names, imgsz and stride.

- fp32 / ``half`` (fp16 weights): the raw layout, Ultralytics' TFLite shape: ``output0``
  ``(1, 4+nc+nm, A)`` with boxes normalized to 0-1 inside the graph, ``output1`` protos NHWC.
- ``int8`` (float input/outputs) / ``int8_io`` (int8 input and outputs): the split layout (boxes,
  scores, coefs, protos: one tensor each with its own scale), static int8 through litert-quantizer
  (per-channel int8 weights, int8 activations), calibrated on ``data`` letterboxed as at inference;
  the parts in :data:`INT8_FLOAT_PARTS` stay float (measured: see README's convert matrix). At the
  end the float and int8 models are validated on the val split (``val_data``, else ``data``'s)
  and the table is printed and stored in the metadata (``int8_accuracy``).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Dict, Mapping, Tuple

from ._int8 import check_int8_options, int8_record, val_report
from .registry import CALIB_IMAGES, DATA, HALF, INT8, INT8_IO, VAL_DATA, Exporter, ExportJob

__all__ = ["EXPORTER", "export_tflite", "INT8_FLOAT_PARTS"]

#: parts of the head kept float in --int8 (float I/O) models; --int8-io and Edge TPU models are
#: integer throughout
INT8_FLOAT_PARTS = ("decode",)


def _check(opts: Dict[str, Any]) -> None:
    if opts["int8_io"]:
        opts["int8"] = True
    check_int8_options(opts, "TFLite")


def export_tflite(job: ExportJob) -> None:
    """Write the TFLite model at ``job.path``."""
    from . import _litert as lt

    o = job.options
    int8 = bool(o["int8"])
    with job.stage("litert-torch convert (NHWC)"):
        model = lt.float_tflite(job.net, job.imgsz, split=int8)
    meta = dict(job.meta, boxes_normalized=True)
    if not int8:
        if o["half"]:
            with job.stage("float16 weights (litert-quantizer)"):
                model = lt.fp16_tflite(model)
        with job.stage("write TFLite + metadata"):
            job.path.write_bytes(model)
            lt.append_metadata(job.path, meta)
        return
    write_int8(job, model, meta, integer_io=bool(o["int8_io"]), float_parts=() if o["int8_io"] else INT8_FLOAT_PARTS)


def write_int8(job: ExportJob, model: bytes, meta: Dict[str, Any], *, integer_io: bool, float_parts: Any,
               path: Path = None) -> Tuple[Dict[str, Any], bytes]:  # type: ignore[assignment]
    """Calibrate, quantize, validate float vs int8 and write the int8 model (with its report) at
    ``path`` (default ``job.path``). Returns the metadata written and the bare flatbuffer."""
    from . import _litert as lt

    o = job.options
    path = path or job.path
    n = o["calib_images"] or lt.DEFAULT_CALIB_IMAGES
    with job.stage("calibration images (letterboxed)"):
        calib, files = lt.calibration_images(Path(o["data"]), n, job.imgsz, job.loaded.stride)
    with job.stage(f"static int8 quantization ({len(calib)} images)"):
        q = lt.quantize(model, lt.int8_recipe(model, 8, float_parts, integer_io=integer_io), calib)
    meta = dict(meta, output_layout="split", split_outputs=lt.split_names(q), boxes_normalized=True,
                quantization="int8",
                int8=int8_record(o, len(calib), io="int8" if integer_io else "float32", float_parts=float_parts,
                                  calibration_method=lt.CALIBRATION))
    with job.stage("accuracy report (val float vs int8)"):
        report = _report(job, model, q, meta)
    if report is not None:
        meta["int8_accuracy"] = report
    with job.stage("write TFLite + metadata"):
        path.write_bytes(q)
        lt.append_metadata(path, meta)
    return meta, q


def _report(job: ExportJob, float_model: bytes, q: bytes, meta: Mapping[str, Any]) -> Any:
    """Float vs int8 val on the val split, printed as a table; None (with a note) when there are
    no labels to score against."""
    from . import _litert as lt

    float_meta = {k: v for k, v in meta.items() if k not in ("int8",)}
    float_meta["quantization"] = "fp32"
    with tempfile.TemporaryDirectory(prefix="edgeseg-int8-") as tmp:
        fp, qp = Path(tmp) / "float.tflite", Path(tmp) / "int8.tflite"
        fp.write_bytes(float_model)
        lt.append_metadata(fp, dict(float_meta, split_outputs=lt.split_names(float_model)))
        qp.write_bytes(q)
        lt.append_metadata(qp, meta)
        return val_report(fp, qp, job.options, job.imgsz)


def _stages(o: Mapping[str, Any]) -> int:
    if o.get("int8") or o.get("int8_io"):
        return 5
    return 3 if o.get("half") else 2


EXPORTER = Exporter(
    name="tflite",
    title="TFLite",
    suffix=".tflite",
    description="TFLite flatbuffer via litert-torch (NHWC input); --int8/--int8-io static int8, split outputs",
    contents="one file, metadata zip appended",
    export=export_tflite,
    options=(HALF, INT8, INT8_IO, DATA, CALIB_IMAGES, VAL_DATA),
    requires=("litert_torch", "litert_quantizer", "ai_edge_litert"),
    extra="convert-tflite",
    backend="litert",
    stages=_stages,
    check=_check,
    order=95,
    notes={"int8": "static int8, activations calibrated on --data"},
)
