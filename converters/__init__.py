"""Workstation side of edgeseg (installed as ``edgeseg.converters``): the torch model family,
checkpoint import, exporters and quantization. Needs ``pip install 'edgeseg[convert]'``.
Nothing under ``edgeseg/`` or ``edgeseg.runtimes`` imports this package at module level.

Importing this package is cheap (torch loads on first use of an attribute below)::

    from edgeseg.converters import export, load_model
    load_model("yolov8n-seg.pt")                     # -> LoadedModel (torch module, names, imgsz)
    export("yolov8n-seg.pt", to="onnx", imgsz=320)   # -> Path of the artifact
    exporters()                                      # -> the export formats (edgeseg.converters.export)
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "export": ("edgeseg.converters.export", "export"),
    "EXPORT_FORMATS": ("edgeseg.converters.export", "EXPORT_FORMATS"),
    "exporters": ("edgeseg.converters.export.registry", "exporters"),
    "load_model": ("edgeseg.converters.checkpoint", "load_model"),
    "save_checkpoint": ("edgeseg.converters.checkpoint", "save_checkpoint"),
    "new_model": ("edgeseg.converters.checkpoint", "new_model"),
    "train": ("edgeseg.converters.train", "train"),
    "LoadedModel": ("edgeseg.converters.checkpoint", "LoadedModel"),
    "SegmentationModel": ("edgeseg.converters.model", "SegmentationModel"),
    "architecture": ("edgeseg.converters.arch", "architecture"),
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'edgeseg.converters' has no attribute {name!r}")
