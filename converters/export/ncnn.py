"""ncnn through pnnx: ``<name>_ncnn_model/`` with ``<name>.ncnn.param``, ``<name>.ncnn.bin`` and
``metadata.yaml``.

The module is traced to TorchScript at the export size, and pnnx (``pip install pnnx``, part of the
``convert`` extra) converts the trace to ncnn; its intermediate files (``.pnnx.param``,
``.pnnx.onnx``, generated Python) stay in a temporary folder, so the output folder holds only the
ncnn pair and the metadata (an ONNX file left there would make ``backend="auto"`` pick ONNX Runtime).
Blob names are pnnx's: input ``in0`` ``(1, 3, H, W)``; outputs ``out0`` ``(1, 4+nc+nm, N)`` and
``out1`` protos ``(1, nm, H/4, W/4)`` (ncnn itself drops the batch axis; the edgeseg backend
restores it). ``half`` stores the weights as fp16 in the ``.bin`` (ncnn computes in fp32 or fp16
as its runtime options say). The input size is fixed (ncnn reshapes at run time anyway).
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from edgeseg.errors import ConversionError

from .registry import HALF, Exporter, ExportJob

__all__ = ["EXPORTER", "export_ncnn", "pnnx_executable"]

PARAM_MAGIC = "7767517"
PNNX_TIMEOUT_S = 900.0


def pnnx_executable() -> str:
    """Path of the pnnx converter shipped in the ``pnnx`` wheel; ConversionError when missing."""
    import importlib.util

    spec = importlib.util.find_spec("pnnx")  # its location, not only whether it is there
    if spec is None or spec.origin is None:
        raise ConversionError("ncnn export needs pnnx, which is not installed: pip install 'edgeseg[convert]' (or pip install pnnx)")
    exe = Path(spec.origin).parent / ("pnnx.exe" if os.name == "nt" else "pnnx")
    if not exe.is_file():
        raise ConversionError(f"ncnn export: the pnnx package has no converter binary at {exe}")
    return str(exe)


def export_ncnn(job: ExportJob) -> None:
    """Export into the folder ``job.path``: ``<name>.ncnn.param``, ``<name>.ncnn.bin``, ``metadata.yaml``."""
    import tempfile

    import torch

    exe = pnnx_executable()
    folder = Path(job.path).resolve()  # pnnx runs in a temp folder: relative paths would land there
    with tempfile.TemporaryDirectory(prefix="edgeseg-pnnx-") as tmp_s:
        tmp = Path(tmp_s)
        ts_path = tmp / "model.pt"
        with job.stage("torch.jit.trace"):
            ts = torch.jit.trace(job.net, job.im, strict=False, check_trace=False)
            ts.save(str(ts_path))
        shape = ",".join(str(int(d)) for d in job.im.shape)
        param, weights = folder / f"{job.name}.ncnn.param", folder / f"{job.name}.ncnn.bin"
        args = [exe, str(ts_path), f"inputshape=[{shape}]f32", "device=cpu", f"fp16={1 if job.options['half'] else 0}",
                f"ncnnparam={param}", f"ncnnbin={weights}",
                f"pnnxparam={tmp / 'model.pnnx.param'}", f"pnnxbin={tmp / 'model.pnnx.bin'}",
                f"pnnxpy={tmp / 'model_pnnx.py'}", f"pnnxonnx={tmp / 'model.pnnx.onnx'}",
                f"ncnnpy={tmp / 'model_ncnn.py'}"]
        with job.stage("pnnx"):
            proc = subprocess.run(args, cwd=str(tmp), capture_output=True, text=True, timeout=PNNX_TIMEOUT_S)
            if proc.returncode != 0 or not param.is_file() or not weights.is_file():
                tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-4:])
                raise ConversionError(f"ncnn export failed at stage 'pnnx' (exit code {proc.returncode}): {tail[:600]}")
    with job.stage("check ncnn files"):
        text = param.read_text(encoding="utf-8")
        if not text.startswith(PARAM_MAGIC):
            raise ConversionError(f"ncnn export: pnnx wrote {param.name} without the ncnn magic {PARAM_MAGIC}")
        if weights.stat().st_size == 0:
            raise ConversionError(f"ncnn export: pnnx wrote an empty {weights.name}")
    with job.stage("metadata"):
        job.write_sidecar(folder)


EXPORTER = Exporter(
    name="ncnn",
    title="ncnn",
    suffix="_ncnn_model",
    folder=True,
    folder_files=("*.param", "*.bin", "*.yaml"),
    description="ncnn folder, via pnnx",
    contents="<name>.ncnn.param, <name>.ncnn.bin, metadata.yaml",
    export=export_ncnn,
    options=(HALF,),
    requires=("pnnx",),
    backend="ncnn",
    stages=4,
    order=30,
)
