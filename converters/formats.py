"""The export formats (a light module: no torch import, so the CLI's ``--help`` stays fast)."""
from __future__ import annotations

from typing import Dict, Tuple

__all__ = ["EXPORT_FORMATS", "FOLDER_FORMATS"]

#: format -> (artifact suffix, description)
EXPORT_FORMATS: Dict[str, Tuple[str, str]] = {
    "onnx": (".onnx", "ONNX file (onnxruntime, OpenVINO, TensorRT...)"),
    "openvino": ("_openvino_model", "OpenVINO IR folder (.xml + .bin + metadata.yaml)"),
    "torchscript": (".torchscript", "TorchScript file (torch.jit.load)"),
    "ncnn": ("_ncnn_model", "ncnn folder (.param + .bin + metadata.yaml), via pnnx"),
}

#: formats whose artifact is a folder, and the file suffixes such a folder may already hold
FOLDER_FORMATS: Dict[str, Tuple[str, ...]] = {
    "openvino": (".xml", ".bin", ".yaml"),
    "ncnn": (".param", ".bin", ".yaml"),
}
