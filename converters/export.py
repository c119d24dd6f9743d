"""``export()``: a checkpoint to ONNX, OpenVINO IR or TorchScript, with metadata, atomically.

    >>> from edgeseg.converters import export
    >>> export("yolov8n-seg.pt", to="onnx", imgsz=320)          # yolov8n-seg.onnx beside the .pt
    >>> export("yolov8n-seg.pt", to="openvino", half=True)      # yolov8n-seg_openvino_model/

Every artifact keeps the raw output layout of the torch model (``output0`` ``(1, 4+nc+nm, N)``,
``output1`` protos ``(1, nm, H/4, W/4)``; input ``images`` ``(1, 3, H, W)`` RGB 0-1) and carries
this metadata (Ultralytics keys plus edgeseg's): description, author, date, version, license,
stride, task, batch, imgsz, names, args, channels, edgeseg_version, output_layout, quantization,
source_sha256, dynamic. A failed export leaves nothing behind and raises
:class:`~edgeseg.errors.ConversionError` naming the stage that failed.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import sys
import types
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple, Union

from edgeseg._version import __version__
from edgeseg.errors import ConversionError, EdgesegError, InputError
from edgeseg.io import atomic_dir, atomic_write

from .checkpoint import LoadedModel, load_model
from .formats import EXPORT_FORMATS, FOLDER_FORMATS

__all__ = ["export", "EXPORT_FORMATS", "export_metadata"]


ImgSz = Union[int, Sequence[int]]


def export(
    model: Union[str, Path, LoadedModel],
    to: str = "onnx",
    imgsz: Optional[ImgSz] = None,
    half: bool = False,
    dynamic: bool = False,
    opset: Optional[int] = None,
    simplify: bool = False,
    out: Optional[Union[str, Path]] = None,
    progress: bool = True,
) -> Path:
    """Export ``model`` (a checkpoint path or a :class:`LoadedModel`) to format ``to``.

    Args:
        imgsz: input size, ``640`` or ``(h, w)`` in pixels (rounded up to a multiple of the
            stride, 32); default the checkpoint's training size.
        half: fp16 weights and compute. ONNX: the graph is converted to float16 after export
            (onnxconverter-common), input and outputs stay float32; OpenVINO: fp16-compressed weights,
            float32 input and outputs; TorchScript: traced in fp16, fp16 input and outputs.
        dynamic: dynamic batch, height and width (ONNX, OpenVINO, TorchScript).
        opset: ONNX opset; <= 17 uses the TorchScript-based exporter, >= 18 the dynamo exporter
            (default 17).
        simplify: run onnxslim on the ONNX graph.
        out: output path (file for ONNX/TorchScript, folder for OpenVINO); default beside the
            checkpoint: ``<stem>.onnx``, ``<stem>_openvino_model/``, ``<stem>.torchscript``.
            An existing directory given for a file format receives ``<stem><suffix>`` inside.
        progress: show a progress bar of the stages on stderr.

    Returns the path of the artifact (the folder for OpenVINO).
    """
    fmt = str(to).lower()
    if fmt not in EXPORT_FORMATS:
        raise InputError(f"unknown export format {to!r}; expected one of {', '.join(EXPORT_FORMATS)}")
    if opset is not None and fmt != "onnx":
        raise InputError(f"opset applies to ONNX exports only, got opset={opset} with to={fmt!r}")
    if simplify and fmt != "onnx":
        raise InputError(f"simplify applies to ONNX exports only, got to={fmt!r}")
    if dynamic and fmt == "ncnn":
        raise InputError("ncnn exports have a fixed input size; drop dynamic (ncnn reshapes at run time anyway)")
    if opset is not None and not 11 <= int(opset) <= 23:
        raise InputError(f"opset must be between 11 and 23, got {opset}")

    from tqdm import tqdm

    total = {"onnx": 7 + bool(simplify) + bool(half), "openvino": 7, "torchscript": 4, "ncnn": 6}[fmt]
    bar = tqdm(total=total, desc=f"export {fmt}", unit="stage", file=sys.stderr, disable=not progress, leave=False)

    @contextlib.contextmanager
    def stage(name: str) -> Iterator[None]:
        bar.set_postfix_str(name)
        try:
            yield
        except EdgesegError:
            raise
        except Exception as exc:
            raise ConversionError(f"{fmt} export failed at stage '{name}': {type(exc).__name__}: {_short(exc)}") from exc
        bar.update(1)

    try:
        with stage("load checkpoint"):
            loaded = model if isinstance(model, LoadedModel) else load_model(model)
        return _export(loaded, fmt, imgsz, half, dynamic, opset, simplify, out, stage)
    finally:
        bar.close()


def _export(loaded: LoadedModel, fmt: str, imgsz: Optional[ImgSz], half: bool, dynamic: bool, opset: Optional[int],
            simplify: bool, out: Optional[Union[str, Path]], stage: Any) -> Path:
    import copy

    import torch

    from . import exporters

    hw = _check_imgsz(imgsz if imgsz is not None else loaded.imgsz, loaded.stride)
    target = _target(loaded, fmt, out)
    meta = export_metadata(loaded, hw, half=half,
                           dynamic=dynamic, fmt=fmt, opset=opset, simplify=simplify)

    with stage("prepare model (fuse, dry run)"):
        net = copy.deepcopy(loaded.model).float().eval().fuse()
        for p in net.parameters():
            p.requires_grad_(False)
        im = torch.zeros(1, 3, *hw)
        if half and fmt == "torchscript":
            net, im = net.half(), im.half()
        with torch.no_grad():
            net(im)  # shapes are valid before any file is written

    try:
        with torch.no_grad(), exporters.quiet():
            if fmt in FOLDER_FORMATS:
                _refuse_foreign_folder(target, fmt)
                with atomic_dir(target) as tmp_dir:
                    if fmt == "openvino":
                        exporters.export_openvino(net, im, tmp_dir, target.name.replace("_openvino_model", ""), meta,
                                                  stage, dynamic=dynamic, half=half)
                    else:
                        from .export_ncnn import export_ncnn

                        export_ncnn(net, im, tmp_dir, target.name.replace("_ncnn_model", ""), meta, stage, half=half)
            elif fmt == "onnx":
                with atomic_write(target) as tmp:
                    exporters.export_onnx(net, im, tmp, meta, stage, opset=opset, dynamic=dynamic, simplify=simplify,
                                          half=half)
            else:
                with atomic_write(target) as tmp:
                    exporters.export_torchscript(net, im, tmp, meta, stage)
    except OSError as exc:  # creating the temp file / renaming it into place
        raise ConversionError(f"{fmt} export: cannot write {target}: {exc}") from exc
    return target


def export_metadata(loaded: LoadedModel, hw: Tuple[int, int], *, half: bool, dynamic: bool, fmt: str,
                    opset: Optional[int] = None, simplify: bool = False) -> Dict[str, Any]:
    """The metadata every artifact carries (Python values; each format serializes them)."""
    args: Dict[str, Any] = {"batch": 1, "half": bool(half), "dynamic": bool(dynamic), "format": fmt}
    if fmt == "onnx":
        args.update(opset=int(opset or 17), simplify=bool(simplify))
    return {
        "description": f"edgeseg export of {loaded.arch_name} from {loaded.source.name}",
        "author": "edgeseg",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "version": __version__,
        "license": str(loaded.info.get("license") or ""),
        "stride": int(loaded.stride),
        "task": "segment",
        "batch": 1,
        "imgsz": [int(hw[0]), int(hw[1])],
        "names": {int(k): str(v) for k, v in loaded.names.items()},
        "args": args,
        "channels": 3,
        "edgeseg_version": __version__,
        "output_layout": "raw",
        "quantization": "fp16" if half else "fp32",
        "source_sha256": loaded.sha256,
        "dynamic": bool(dynamic),
    }


def _short(exc: BaseException, limit: int = 400) -> str:
    """The first line of a vendor error (torch errors can hold whole graph dumps), capped."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_imgsz(imgsz: ImgSz, stride: int) -> Tuple[int, int]:
    if isinstance(imgsz, (int, float)):
        hw = [int(imgsz), int(imgsz)]
    else:
        hw = [int(v) for v in imgsz]
        if len(hw) == 1:
            hw *= 2
    if len(hw) != 2 or min(hw) <= 0:
        raise InputError(f"imgsz must be a positive int or (h, w), got {imgsz!r}")
    fixed = [-(-v // stride) * stride for v in hw]
    if fixed != hw:
        print(f"edgeseg: imgsz {hw} is not a multiple of the stride {stride}; using {fixed}", file=sys.stderr)
    return (fixed[0], fixed[1])


def _target(loaded: LoadedModel, fmt: str, out: Optional[Union[str, Path]]) -> Path:
    suffix = EXPORT_FORMATS[fmt][0]
    stem = loaded.source.stem
    if out is None:
        return loaded.source.with_name(stem + suffix)
    out = Path(out)
    if fmt in FOLDER_FORMATS:
        if out.suffix.lower() in (".xml", ".bin", ".onnx", ".param"):
            raise InputError(f"for {fmt}, out is the output folder (e.g. {stem}{suffix}), got a file name {out.name!r}")
        return out
    if out.is_dir():
        return out / (stem + suffix)
    return out


_DISPLAY = {"openvino": "OpenVINO", "ncnn": "ncnn"}


def _refuse_foreign_folder(target: Path, fmt: str) -> None:
    """An existing export folder of the same format is replaced; any other folder is left alone."""
    if target.exists():
        if not target.is_dir():
            raise ConversionError(f"{fmt} export: {target} exists and is not a folder")
        foreign = [p.name for p in target.iterdir() if p.suffix.lower() not in FOLDER_FORMATS[fmt]]
        if foreign:
            raise ConversionError(
                f"{fmt} export: {target} exists and holds files that are not an {_DISPLAY[fmt]} export "
                f"({', '.join(sorted(foreign)[:5])}); choose another --out"
            )


class _CallableModule(types.ModuleType):
    """``edgeseg.converters.export`` is this module and, when called, :func:`export` — so
    ``edgeseg.converters.export(...)`` works whichever of the two Python bound to that name."""

    def __call__(self, *args: Any, **kwargs: Any) -> Path:
        return export(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
