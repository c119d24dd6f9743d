"""ncnn export through pnnx: a torch module to ``<name>.ncnn.param`` + ``<name>.ncnn.bin`` + ``metadata.yaml``.

    >>> from edgeseg.converters.export_ncnn import export_checkpoint_ncnn
    >>> export_checkpoint_ncnn("yolov8n-seg.pt", imgsz=320)   # -> yolov8n-seg_ncnn_model/

The module is traced to TorchScript at the export size, and pnnx (``pip install pnnx``, part of the
``convert`` extra) converts the trace to ncnn; its intermediate files (``.pnnx.param``,
``.pnnx.onnx``, generated Python) stay in a temporary folder, so the output folder holds only the
ncnn pair and the metadata (an ONNX file left there would make ``backend="auto"`` pick ONNX Runtime).
Blob names are pnnx's: input ``in0`` ``(1, 3, H, W)``; outputs ``out0`` ``(1, 4+nc+nm, N)`` and
``out1`` protos ``(1, nm, H/4, W/4)`` (ncnn itself drops the batch axis; the edgeseg backend
restores it). ``half`` stores the weights as fp16 in the ``.bin`` (ncnn computes in fp32 or fp16
as its runtime options say).

:func:`export_ncnn` has the signature of the other per-format exporters in
:mod:`edgeseg.converters.exporters` (``net, im, folder, name, meta, stage``) so
:func:`edgeseg.converters.export` can call it for ``to="ncnn"``.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, Iterator, Optional, Sequence, Union

from edgeseg.errors import ConversionError, EdgesegError, InputError

__all__ = ["export_ncnn", "export_checkpoint_ncnn", "pnnx_executable", "NCNN_SUFFIX"]

NCNN_SUFFIX = "_ncnn_model"
PARAM_MAGIC = "7767517"
Stage = Callable[[str], ContextManager[None]]


def pnnx_executable() -> str:
    """Path of the pnnx converter shipped in the ``pnnx`` wheel; ConversionError when missing."""
    import importlib.util

    spec = importlib.util.find_spec("pnnx")
    if spec is None or spec.origin is None:
        raise ConversionError("ncnn export needs pnnx, which is not installed: pip install 'edgeseg[convert]' (or pip install pnnx)")
    exe = Path(spec.origin).parent / ("pnnx.exe" if os.name == "nt" else "pnnx")
    if not exe.is_file():
        raise ConversionError(f"ncnn export: the pnnx package has no converter binary at {exe}")
    return str(exe)


@contextlib.contextmanager
def _plain_stage(name: str) -> Iterator[None]:
    try:
        yield
    except EdgesegError:
        raise
    except Exception as exc:
        raise ConversionError(f"ncnn export failed at stage '{name}': {type(exc).__name__}: {exc}") from exc


def export_ncnn(net: Any, im: Any, folder: Path, name: str, meta: Dict[str, Any], stage: Stage = _plain_stage, *,
                half: bool = False, timeout_s: float = 900.0) -> None:
    """Export ``net`` (float32, eval mode) traced on ``im`` ``(1, 3, H, W)`` into ``folder``:
    ``<name>.ncnn.param``, ``<name>.ncnn.bin`` and ``metadata.yaml`` (``meta``, YAML)."""
    import torch
    import yaml

    exe = pnnx_executable()
    folder = Path(folder).resolve()  # pnnx runs in a temp folder: relative paths would land there
    with tempfile.TemporaryDirectory(prefix="edgeseg-pnnx-") as tmp_s:
        tmp = Path(tmp_s)
        ts_path = tmp / "model.pt"
        with stage("torch.jit.trace"):
            with torch.no_grad():
                ts = torch.jit.trace(net, im, strict=False, check_trace=False)
            ts.save(str(ts_path))
        shape = ",".join(str(int(d)) for d in im.shape)
        param, weights = folder / f"{name}.ncnn.param", folder / f"{name}.ncnn.bin"
        args = [exe, str(ts_path), f"inputshape=[{shape}]f32", "device=cpu", f"fp16={1 if half else 0}",
                f"ncnnparam={param}", f"ncnnbin={weights}",
                f"pnnxparam={tmp / 'model.pnnx.param'}", f"pnnxbin={tmp / 'model.pnnx.bin'}",
                f"pnnxpy={tmp / 'model_pnnx.py'}", f"pnnxonnx={tmp / 'model.pnnx.onnx'}",
                f"ncnnpy={tmp / 'model_ncnn.py'}"]
        with stage("pnnx"):
            proc = subprocess.run(args, cwd=str(tmp), capture_output=True, text=True, timeout=timeout_s)
            if proc.returncode != 0 or not param.is_file() or not weights.is_file():
                tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-4:])
                raise ConversionError(f"ncnn export failed at stage 'pnnx' (exit code {proc.returncode}): {tail[:600]}")
    with stage("check ncnn files"):
        text = param.read_text(encoding="utf-8")
        if not text.startswith(PARAM_MAGIC):
            raise ConversionError(f"ncnn export: pnnx wrote {param.name} without the ncnn magic {PARAM_MAGIC}")
        if weights.stat().st_size == 0:
            raise ConversionError(f"ncnn export: pnnx wrote an empty {weights.name}")
    with stage("metadata"):
        (folder / "metadata.yaml").write_text(yaml.safe_dump(meta, sort_keys=False, allow_unicode=True), encoding="utf-8")


def export_checkpoint_ncnn(model: Union[str, Path], out: Optional[Union[str, Path]] = None,
                           imgsz: Optional[Union[int, Sequence[int]]] = None, half: bool = False,
                           name: str = "model") -> Path:
    """A checkpoint (``.pt``) to an ncnn folder (default ``<stem>_ncnn_model`` beside it), atomically.

    Standalone path while :func:`edgeseg.converters.export` learns ``to="ncnn"``: loads the
    checkpoint, builds the same metadata as the other exports, and calls :func:`export_ncnn`."""
    import copy

    import torch

    from edgeseg.io import atomic_dir

    from .checkpoint import load_model
    from .export import _check_imgsz, export_metadata

    loaded = load_model(model)
    hw = _check_imgsz(imgsz if imgsz is not None else loaded.imgsz, loaded.stride)
    target = Path(out) if out is not None else loaded.source.with_name(loaded.source.stem + NCNN_SUFFIX)
    if target.exists():
        if not target.is_dir():
            raise InputError(f"ncnn export: {target} exists and is not a folder")
        foreign = [p.name for p in target.iterdir() if p.suffix not in (".param", ".bin", ".yaml")]
        if foreign:
            raise InputError(f"ncnn export: {target} holds files that are not an ncnn export "
                             f"({', '.join(sorted(foreign)[:5])}); choose another out folder")
    meta = export_metadata(loaded, hw, half=half, dynamic=False, fmt="ncnn")
    net = copy.deepcopy(loaded.model).float().eval().fuse()
    for p in net.parameters():
        p.requires_grad_(False)
    im = torch.zeros(1, 3, *hw)
    with torch.no_grad():
        net(im)  # shapes are valid before anything is written
    with atomic_dir(target) as tmp_dir:
        export_ncnn(net, im, Path(tmp_dir), name, meta, half=half)
        umask = os.umask(0)
        os.umask(umask)
        for p in [Path(tmp_dir), *Path(tmp_dir).iterdir()]:
            os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~umask)
    return target
