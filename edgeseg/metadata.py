"""Model metadata: Ultralytics-compatible keys plus edgeseg's own, from wherever a format keeps them.

Places: ONNX ``metadata_props``; a zip appended to ``.tflite`` files (Ultralytics writes
``metadata.json`` there); ``metadata.yaml`` beside OpenVINO and ncnn exports. Values stored as
strings are parsed with :func:`json.loads`, then :func:`ast.literal_eval` (literals only), never
``eval`` or pickle.
"""
from __future__ import annotations

import ast
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from .errors import ModelLoadError

__all__ = ["ModelMeta", "parse_metadata", "parse_value", "read_tflite_zip_metadata", "read_sidecar", "SIDECAR"]

SIDECAR = "metadata.yaml"
LAYOUTS = ("raw", "nms", "split")


def parse_value(value: Any) -> Any:
    """A metadata value as a Python object: JSON, else a Python literal, else the string itself."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        return text
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return value


@dataclass
class ModelMeta:
    """What a model says about itself. Every field is optional: models without metadata work too."""

    names: Dict[int, str] = field(default_factory=dict)
    imgsz: Optional[Tuple[int, int]] = None
    stride: int = 32
    task: Optional[str] = None
    output_layout: Optional[str] = None
    split_outputs: Dict[str, str] = field(default_factory=dict)
    boxes_normalized: Optional[bool] = None
    quantization: Optional[str] = None
    source: str = "none"
    raw: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "source": self.source,
            "task": self.task,
            "imgsz": list(self.imgsz) if self.imgsz else None,
            "stride": self.stride,
            "output_layout": self.output_layout,
            "boxes_normalized": self.boxes_normalized,
            "quantization": self.quantization,
            "num_names": len(self.names),
        }


def _names(value: Any) -> Dict[int, str]:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            try:
                out[int(k)] = str(v)
            except (TypeError, ValueError):
                raise ModelLoadError(f"metadata 'names' has a non-integer class id {k!r}") from None
        return out
    if isinstance(value, (list, tuple)):
        return {i: str(v) for i, v in enumerate(value)}
    return {}


def _imgsz(value: Any) -> Optional[Tuple[int, int]]:
    if isinstance(value, (int, float)) and value > 0:
        return (int(value), int(value))
    if isinstance(value, (list, tuple)) and len(value) in (1, 2):
        try:
            vals = [int(v) for v in value]
        except (TypeError, ValueError):
            return None
        if len(vals) == 1:
            vals = vals * 2
        if min(vals) > 0:
            return (vals[0], vals[1])
    return None


def parse_metadata(raw: Optional[Mapping[str, Any]], source: str = "none") -> ModelMeta:
    """Turn a raw key/value mapping (strings or objects) into :class:`ModelMeta`."""
    if not raw:
        return ModelMeta(source="none")
    parsed = {str(k): parse_value(v) for k, v in raw.items()}
    meta = ModelMeta(source=source, raw=parsed)
    meta.names = _names(parsed.get("names"))
    meta.imgsz = _imgsz(parsed.get("imgsz"))
    stride = parsed.get("stride")
    if isinstance(stride, (int, float)) and stride > 0:
        meta.stride = int(stride)
    task = parsed.get("task")
    meta.task = str(task) if task else None
    layout = parsed.get("output_layout")
    meta.output_layout = str(layout) if layout in LAYOUTS else None
    split = parsed.get("split_outputs")
    if isinstance(split, dict):
        meta.split_outputs = {str(k): str(v) for k, v in split.items()}
    bn = parsed.get("boxes_normalized")
    if isinstance(bn, bool):
        meta.boxes_normalized = bn
    elif isinstance(bn, str) and bn.lower() in ("true", "false"):
        meta.boxes_normalized = bn.lower() == "true"
    q = parsed.get("quantization")
    meta.quantization = str(q) if q else None
    return meta


def read_tflite_zip_metadata(path: Path) -> Dict[str, Any]:
    """Metadata from the zip that Ultralytics appends to ``.tflite`` files; {} when there is none."""
    try:
        data = path.read_bytes()
    except OSError:
        return {}
    if b"PK\x05\x06" not in data[-65_600:]:  # no end-of-central-directory record near the end
        return {}
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
            if not names:
                return {}
            preferred = [n for n in names if n.endswith((".json", ".txt", ".yaml"))] or names
            text = zf.read(preferred[0]).decode("utf-8", errors="replace")
    except (zipfile.BadZipFile, OSError, KeyError, RuntimeError):
        return {}
    value = parse_value(text)
    if isinstance(value, dict):
        return value
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return {}
    return value if isinstance(value, dict) else {}


def read_sidecar(model_path: Path) -> Dict[str, Any]:
    """``metadata.yaml`` beside a model file or inside a model folder; {} when absent."""
    folder = model_path if model_path.is_dir() else model_path.parent
    p = folder / SIDECAR
    if not p.is_file():
        return {}
    import yaml

    try:
        value = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{p}: metadata file is not valid YAML: {exc}") from exc
    if not isinstance(value, dict):
        raise ModelLoadError(f"{p}: expected a mapping of metadata keys, found {type(value).__name__}")
    return value
