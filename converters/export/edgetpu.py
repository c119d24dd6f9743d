"""Edge TPU: a folder with ``<name>_full_integer_quant.tflite`` (int8 throughout, int8 input and
outputs, static shapes, split layout, only ops the Edge TPU compiler maps) and, when
``edgetpu_compiler`` is on PATH, ``<name>_full_integer_quant_edgetpu.tflite`` with the compiler's
log. Without the compiler (it exists for x86-64 Linux only and is in no package registry) the
export succeeds and prints the exact command to compile the model on such a host.

Before compiling, every op is checked against Coral's op list and tensor rules
(:func:`._litert.edgetpu_check`) and the ops that would run on the CPU are printed.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

from .registry import CALIB_IMAGES, DATA, VAL_DATA, Exporter, ExportJob

__all__ = ["EXPORTER", "export_edgetpu", "compile_command", "op_summary"]

COMPILER = "edgetpu_compiler"
COMPILER_TIMEOUT_S = 600


def compile_command(model: Path, out_dir: Path) -> List[str]:
    """The compiler invocation (as Ultralytics runs it): mapping summary (-s), 10 s per-op search."""
    return [COMPILER, "-s", "-d", "-k", "10", "--out_dir", str(out_dir), str(model)]


def op_summary(rows: List[Dict[str, Any]]) -> str:
    """Ops on the Edge TPU vs the CPU, and why each CPU op is there."""
    tpu = sum(r["tpu"] and not r["after_cpu"] for r in rows)
    lines = [f"Edge TPU op check: {tpu} of {len(rows)} ops map to the Edge TPU"]
    for r in rows:
        if not r["tpu"]:
            lines.append(f"  CPU: op {r['index']} {r['op']}: {'; '.join(r['reasons'])}")
        elif r["after_cpu"]:
            lines.append(f"  CPU: op {r['index']} {r['op']}: after an unmapped op (the compiler maps one leading segment)")
    if tpu == len(rows):
        lines.append("  every op is on Coral's list, int8, static, at most 3 dimensions > 1")
    return "\n".join(lines)


def export_edgetpu(job: ExportJob) -> None:
    """Write the Edge TPU folder at ``job.path``."""

    from . import _litert as lt
    from .tflite import write_int8

    with job.stage("litert-torch convert (NHWC)"):
        model = lt.float_tflite(job.net, job.imgsz, split=True)
    # <name>: the folder's stem when it is <name>_edgetpu_model, else the checkpoint's (--out coral/)
    stem = job.name if job.target.name.endswith(EXPORTER.suffix) else job.loaded.source.stem
    name = f"{stem}_full_integer_quant.tflite"
    path = job.path / name
    meta, q = write_int8(job, model, dict(job.meta, boxes_normalized=True), integer_io=True, float_parts=(), path=path)
    with job.stage("Edge TPU op check"):
        rows = lt.edgetpu_check(path)
        print(op_summary(rows), file=sys.stderr)
        meta["edgetpu_ops"] = {"total": len(rows), "tpu": sum(r["tpu"] and not r["after_cpu"] for r in rows),
                               "cpu": [f"{r['index']}:{r['op']}" for r in rows if not r["tpu"] or r["after_cpu"]]}
        path.write_bytes(q)  # the metadata zip again, now with the op mapping
        lt.append_metadata(path, meta)
    with job.stage("edgetpu_compiler"):
        final = job.target / name
        exe = shutil.which(COMPILER)
        if exe is None:
            cmd = " ".join(compile_command(final, job.target))
            print(f"edgeseg: {COMPILER} is not on PATH (it runs on x86-64 Linux only). The compile-ready model is "
                  f"{final}; compile it on an x86-64 Linux host with:\n  {cmd}", file=sys.stderr)
        else:
            _compile(exe, path, job.path, meta)
        job.write_sidecar(job.path, lt._jsonable(meta))


def _compile(exe: str, model: Path, out_dir: Path, meta: Dict[str, Any]) -> None:
    from edgeseg.errors import ConversionError

    from . import _litert as lt

    cmd = compile_command(model, out_dir)
    cmd[0] = exe
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=COMPILER_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConversionError(f"{COMPILER} failed to run: {exc}") from exc
    (out_dir / (model.stem + "_edgetpu_compile.log")).write_text(proc.stdout + proc.stderr, encoding="utf-8")
    compiled = out_dir / (model.stem + "_edgetpu.tflite")
    if proc.returncode != 0 or not compiled.is_file():
        raise ConversionError(f"{COMPILER} exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[:400]}")
    print(proc.stdout, file=sys.stderr)
    lt.append_metadata(compiled, meta)


def _check(opts: Dict[str, Any]) -> None:
    from edgeseg.errors import InputError

    if opts["data"] is None:
        raise InputError("the Edge TPU model is full int8: pass calibration images (--data DATASET.yaml or an image folder)")
    if opts["calib_images"] is not None and opts["calib_images"] < 1:
        raise InputError(f"calib_images must be a positive integer, got {opts['calib_images']}")
    # the int8 path of the TFLite exporter reads these
    opts.setdefault("int8", True)
    opts.setdefault("int8_io", True)


EXPORTER = Exporter(
    name="edgetpu",
    title="Edge TPU",
    suffix="_edgetpu_model",
    folder=True,
    folder_files=("*_full_integer_quant.tflite", "*_edgetpu.tflite", "*_edgetpu_compile.log", "*.log", "metadata.yaml"),
    description="Edge TPU folder: full-int8 TFLite (+ compiled *_edgetpu.tflite when edgetpu_compiler is on PATH)",
    contents="<name>_full_integer_quant.tflite, [<name>_full_integer_quant_edgetpu.tflite, log], metadata.yaml",
    export=export_edgetpu,
    options=(DATA, CALIB_IMAGES, VAL_DATA),
    requires=("litert_torch", "litert_quantizer", "ai_edge_litert"),
    extra="convert-tflite",
    backend="litert",
    precisions=("int8",),
    bench=False,
    stages=7,
    check=_check,
    order=96,
)
