"""edgeseg: run YOLO instance-segmentation models on edge devices without torch.

    >>> from edgeseg import Runtime
    >>> with Runtime("yolov8n-seg.onnx") as rt:
    ...     res = rt("bus.jpg")
    ...     print(res.boxes, res.class_names)

``import edgeseg`` is light: it imports numpy only; OpenCV, backends and the converters load on use.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    BackendUnavailableError,
    ConversionError,
    DatasetError,
    EdgesegError,
    ImageReadError,
    InputError,
    LayoutError,
    ModelLoadError,
    SourceError,
)

if TYPE_CHECKING:  # pragma: no cover
    from .masks import Masks
    from .results import Results
    from .runtime import Runtime

_LAZY = {
    "Runtime": ("edgeseg.runtime", "Runtime"),
    "Results": ("edgeseg.results", "Results"),
    "Masks": ("edgeseg.masks", "Masks"),
}

__all__ = [
    "__version__",
    "Runtime",
    "Results",
    "Masks",
    "EdgesegError",
    "ModelLoadError",
    "BackendUnavailableError",
    "LayoutError",
    "InputError",
    "ImageReadError",
    "SourceError",
    "DatasetError",
    "ConversionError",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'edgeseg' has no attribute {name!r}")
