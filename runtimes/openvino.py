"""OpenVINO backend: OpenVINO IR (``.xml`` + ``.bin``, or an export folder holding them) and ``.onnx``.

Options:

* ``device``: OpenVINO device name, default ``"CPU"`` (``"GPU"``, ``"NPU"``, ``"AUTO"``...).
* ``threads``: ``INFERENCE_NUM_THREADS``.
* ``performance``: ``False`` (default) pins ``INFERENCE_PRECISION_HINT`` to ``f32`` — on CPUs
  with bf16/AMX OpenVINO otherwise computes in bf16 and boxes move by about a pixel;
  ``True`` lets OpenVINO pick the fastest precision.

Metadata: what the model file embeds — the IR's ``rt_info`` section ``edgeseg`` (written by
``edgeseg convert``), else ``framework`` (where OpenVINO puts ONNX ``metadata_props``). The
``metadata.yaml`` beside an IR (Ultralytics exports) is read by :mod:`edgeseg.metadata`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from edgeseg.backend import Backend, TensorSpec, ensure_file, register
from edgeseg.errors import InputError, ModelLoadError

__all__ = ["OpenVINOBackend"]

_METADATA_SECTIONS = ("edgeseg", "framework")


@register
class OpenVINOBackend(Backend):
    name = "openvino"
    suffixes = (".xml", ".onnx")
    requires = ("openvino",)
    extra = "openvino"
    priority = 20
    format = "openvino"

    def __init__(self, model: Path, *, threads: Optional[int] = None, device: str = "CPU",
                 performance: bool = False, **options: Any) -> None:
        if options:
            raise InputError(f"openvino backend: unknown options {sorted(options)}; expected device, performance")
        try:
            import openvino as ov
        except ImportError as exc:
            raise self.unavailable() from exc
        self.path = _model_file(Path(model))
        core = ov.Core()
        self._check_device(core, device)
        try:
            net = core.read_model(str(self.path))
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses for every parse error
            raise ModelLoadError(
                f"{self.path}: OpenVINO could not read the model (expected a valid "
                f"{'IR .xml with its .bin' if self.path.suffix.lower() == '.xml' else 'ONNX file'}): {_first_line(exc)}"
            ) from exc
        config: Dict[str, Any] = {}
        if not performance:
            config["INFERENCE_PRECISION_HINT"] = "f32"
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self._compiled = core.compile_model(net, device, config)
        except Exception as exc:
            raise ModelLoadError(f"{self.path}: OpenVINO could not compile the model for {device}: {_first_line(exc)}") from exc
        self._request = self._compiled.create_infer_request()
        self.device = device
        self.performance = performance
        self.inputs = [_spec(p, f"input{i}") for i, p in enumerate(self._compiled.inputs)]
        self.outputs = [_spec(p, f"output{i}") for i, p in enumerate(self._compiled.outputs)]
        self._out_ports = list(zip((s.name for s in self.outputs), self._compiled.outputs))
        self.metadata = _rt_metadata(net)
        self._version = ov.__version__ if hasattr(ov, "__version__") else ov.get_version()

    @staticmethod
    def _check_device(core: Any, device: str) -> None:
        base = device.split(":")[0].split(".")[0].upper()
        if base in ("AUTO", "MULTI", "HETERO", "BATCH"):
            return
        available = list(core.available_devices)
        if not any(d.split(".")[0].upper() == base for d in available):
            raise InputError(f"openvino backend: device {device!r} is not available; found {', '.join(available) or 'none'}")

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        names = [s.name for s in self.inputs]
        missing = [n for n in names if n not in feeds]
        if missing:
            raise InputError(f"openvino backend: missing inputs {missing}; expected {names}, got {sorted(feeds)}")
        # vendor errors (device lost, out of memory...) are translated once, by Runtime.infer
        res = self._request.infer({n: np.ascontiguousarray(feeds[n]) for n in names})
        return {name: np.array(res[port]) for name, port in self._out_ports}

    def close(self) -> None:
        self._request = None
        self._compiled = None

    def describe(self) -> Dict[str, Any]:
        return {
            "device": self.device,
            "precision": "auto (performance)" if self.performance else "f32",
            "openvino": str(self._version),
            "file": self.path.name,
        }


def _model_file(path: Path) -> Path:
    """The .xml (or .onnx) to read: ``path`` itself, or the one model file inside a folder."""
    if path.is_dir():
        xmls = sorted(path.glob("*.xml"))
        onnx = sorted(path.glob("*.onnx"))
        files = xmls or onnx
        if not files:
            raise ModelLoadError(f"{path}: folder holds no OpenVINO .xml or .onnx model")
        if len(files) > 1:
            raise ModelLoadError(f"{path}: folder holds several models ({', '.join(p.name for p in files)}); pass one file")
        path = files[0]
    ensure_file(path, ["OpenVINO .xml", ".onnx"])
    if path.suffix.lower() == ".xml":
        bin_path = path.with_suffix(".bin")
        if not bin_path.is_file():
            raise ModelLoadError(f"{path}: the weights file {bin_path.name} is missing (an OpenVINO IR is an .xml plus a .bin)")
    return path


def _spec(port: Any, fallback: str) -> TensorSpec:
    try:
        name = port.get_any_name()
    except RuntimeError:  # tensor without a name
        name = fallback
    pshape = port.get_partial_shape()
    shape: Tuple[Optional[int], ...] = tuple(
        d.get_length() if d.is_static else None for d in pshape
    ) if pshape.rank.is_static else ()
    try:
        dtype = np.dtype(port.get_element_type().to_dtype())
    except Exception:
        dtype = np.dtype(np.float32)
    return TensorSpec(name, shape, dtype)


def _rt_metadata(net: Any) -> Dict[str, Any]:
    for section in _METADATA_SECTIONS:
        try:
            if not net.has_rt_info([section]):
                continue
            value = net.get_rt_info([section]).astype(dict)
        except Exception:  # an rt_info section that is not a mapping: not metadata
            continue
        out: Dict[str, Any] = {}
        for k, v in value.items():
            try:
                out[str(k)] = v.astype(str) if hasattr(v, "astype") else str(v)
            except Exception:
                out[str(k)] = str(getattr(v, "value", v))
        if out:
            return out
    return {}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    skip = ("Exception from ", "Check ", "FrontEnd API failed")
    lines: List[str] = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith(skip)]
    return ("; ".join(lines[:2]) if lines else text or type(exc).__name__)[:300]
