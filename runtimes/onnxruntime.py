"""ONNX Runtime backend (``pip install 'edgeseg[onnx]'``).

Execution providers are configurable: ``providers=["CUDAExecutionProvider", "CPUExecutionProvider"]``
or the short names ``cuda``, ``tensorrt``, ``openvino``, ``coreml``, ``cpu``; the default is the CPU
provider. Providers that this onnxruntime build lacks are dropped with a warning.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from edgeseg.backend import Backend, TensorSpec, ensure_file, register
from edgeseg.errors import InputError, ModelLoadError

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
    "rocm": "ROCMExecutionProvider",
}

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}


def _dim(d: Any) -> Optional[int]:
    return int(d) if isinstance(d, (int, np.integer)) and d > 0 else None


@register
class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    format = "onnx"
    suffixes = (".onnx",)
    requires = ("onnxruntime",)
    extra = "onnx"
    priority = 10

    def __init__(self, model: Path, *, threads: Optional[int] = None,
                 providers: Optional[Sequence[Union[str, tuple]]] = None, **options: Any) -> None:
        if options:
            raise InputError(f"onnxruntime backend: unknown options {sorted(options)}; expected providers")
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise self.unavailable() from exc
        ensure_file(model, ["ONNX (.onnx)"])
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        available = ort.get_available_providers()
        wanted: List[Any] = []
        for p in providers or ["CPUExecutionProvider"]:
            pname = p[0] if isinstance(p, tuple) else p
            full = PROVIDER_ALIASES.get(str(pname).lower(), str(pname))
            if full not in available:
                warnings.warn(f"onnxruntime: provider {full} is not in this build (available: {', '.join(available)}); skipped")
                continue
            wanted.append((full, p[1]) if isinstance(p, tuple) else full)
        if not wanted:
            wanted = ["CPUExecutionProvider"]
        try:
            self._sess = ort.InferenceSession(str(model), sess_options=so, providers=wanted)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
            raise ModelLoadError(f"{model}: onnxruntime cannot load it as an ONNX model: {str(exc).strip()[:400]}") from exc
        self.inputs = [self._spec(i) for i in self._sess.get_inputs()]
        self.outputs = [self._spec(o) for o in self._sess.get_outputs()]
        self.metadata: Dict[str, Any] = dict(self._sess.get_modelmeta().custom_metadata_map)
        self._out_names = [o.name for o in self.outputs]
        self._version = ort.__version__
        self._weights = _weight_quantization(model, self.inputs)

    @staticmethod
    def _spec(node: Any) -> TensorSpec:
        dtype = _ORT_TYPES.get(node.type)
        if dtype is None:
            raise ModelLoadError(f"tensor {node.name!r} has type {node.type}; expected a float or integer tensor")
        return TensorSpec(node.name, tuple(_dim(d) for d in node.shape), np.dtype(dtype))

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        outs = self._sess.run(self._out_names, feeds)
        return dict(zip(self._out_names, outs))

    def close(self) -> None:
        self._sess = None  # type: ignore[assignment]

    def describe(self) -> Dict[str, Any]:
        return {"providers": list(self._sess.get_providers()) if self._sess else [], "onnxruntime": self._version,
                "weights": self._weights}


#: quantization operators, as they appear in the serialized graph, and what they mean
_QUANT_OPS = (
    (b"DynamicQuantizeLinear", "int8 (dynamic quantization: int8 weights, activations quantized at run time)"),
    (b"QLinearConv", "int8 (static quantization, QOperator format)"),
    (b"QLinearMatMul", "int8 (static quantization, QOperator format)"),
    (b"DequantizeLinear", "int8 (static quantization, QDQ format)"),
)


def _weight_quantization(model: Path, inputs: List[TensorSpec]) -> str:
    """How the weights are stored, from the operator types in the file (no onnx package needed)."""
    data = model.read_bytes()
    for op, meaning in _QUANT_OPS:
        if op in data:
            return meaning
    if any(s.dtype == np.float16 for s in inputs):
        return "float16"
    return "float32"
