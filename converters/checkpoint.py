"""Load Ultralytics ``.pt`` checkpoints and edgeseg's own checkpoints; save edgeseg checkpoints.

Ultralytics checkpoint (a torch zip of a pickled ``dict``): ``{"model": SegmentationModel,
"ema": SegmentationModel or None, "train_args": {...}, ...}``. It is read with
:mod:`.unpickle`, never with ``torch.load``: the zip layout is checked first (TorchScript archives
and every other layout are refused before anything is unpickled), the pickle is pre-scanned and
unpickled into inert placeholders, and tensors are read only after their shapes fit the
architecture. Nothing from the file is executed; Ultralytics is not needed. The pickled
model's ``yaml`` attribute is the architecture description; ``names`` the class names;
``args["imgsz"]`` (or the checkpoint's ``train_args``) the training image size.

edgeseg checkpoint, two containers with the same content — the weights plus a JSON config
``{"format": "edgeseg", "format_version": 1, "arch": {...}, "names": {"0": "person", ...},
"imgsz": [h, w], "task": "segment"}``:

* ``.safetensors``: the config string under the header metadata key ``"edgeseg"``;
* ``.pt``: ``torch.save({"edgeseg": config, "state_dict": {...}})`` (also loads with ``torch.load(weights_only=True)``).
"""
from __future__ import annotations

import hashlib
import json
import numbers
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch

from edgeseg.errors import EdgesegError, ModelLoadError

from .arch import validate_architecture
from .model import SegmentationModel
from .unpickle import Placeholder, TensorRef, TorchArchive, module_tree_state_dict, read_checkpoint

__all__ = ["LoadedModel", "load_model", "new_model", "save_checkpoint", "sha256_file", "CHECKPOINT_SUFFIXES"]

#: suffixes :func:`load_model` opens
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".safetensors")
FORMAT_NAME = "edgeseg"
FORMAT_VERSION = 1
#: largest model :func:`load_model` builds (parameters), and largest training image size it accepts
MAX_PARAMETERS = 300_000_000
MAX_IMGSZ = 8192


@dataclass
class LoadedModel:
    """A model ready for inference or export.

    ``model`` is float32, eval mode, unfused; ``imgsz`` is ``(h, w)`` in pixels; ``sha256`` is
    the hex digest of the source file; ``kind`` is ``"ultralytics"`` or ``"edgeseg"``.
    """

    model: SegmentationModel
    names: Dict[int, str]
    imgsz: Tuple[int, int]
    source: Path
    sha256: str
    kind: str
    info: Dict[str, Any] = field(default_factory=dict)

    @property
    def stride(self) -> int:
        return int(self.model.stride.max())

    @property
    def arch_name(self) -> str:
        return str(self.info.get("arch_name", "")) or self.source.stem

    def config(self) -> Dict[str, Any]:
        """The JSON config of the edgeseg checkpoint format for this model."""
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "arch": _jsonable(self.model.arch),
            "names": {str(k): v for k, v in self.names.items()},
            "imgsz": list(self.imgsz),
            "task": "segment",
        }


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_model(path: Union[str, Path]) -> LoadedModel:
    """Load a checkpoint (Ultralytics ``.pt`` or edgeseg ``.pt``/``.safetensors``) as float32, eval mode.

    Raises :class:`ModelLoadError` when the file is missing, is not a checkpoint, or holds an
    architecture edgeseg cannot build (the message names what was found).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"checkpoint not found: {path} (expected a .pt or .safetensors file)")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{path}: file is empty (expected a .pt or .safetensors checkpoint)")
    digest = sha256_file(path)
    try:
        return _load(path, digest)
    except EdgesegError:
        raise
    except Exception as exc:  # MemoryError, RecursionError, or a check this loader lacks: never raw
        raise ModelLoadError(f"{path}: could not read the checkpoint ({type(exc).__name__}: {str(exc)[:200]})") from exc


def _load(path: Path, digest: str) -> LoadedModel:
    if path.suffix.lower() == ".safetensors":
        config, state = _read_safetensors(path)
        return _from_config(path, digest, config, state)
    obj, archive = _read_pickle(path)
    try:
        if isinstance(obj, dict) and FORMAT_NAME in obj:
            config = obj[FORMAT_NAME]
            state = obj.get("state_dict")
            if not isinstance(config, dict) or not isinstance(state, dict):
                raise ModelLoadError(f"{path}: edgeseg checkpoint without a config dict and a state_dict")
            return _from_config(path, digest, config, state)
        return _from_ultralytics(path, digest, obj)
    finally:
        archive.close()


def new_model(family: str = "yolov8-seg", scale: str = "n", nc: int = 80, names: Optional[Dict[int, str]] = None,
              imgsz: Union[int, Tuple[int, int]] = 640) -> LoadedModel:
    """A freshly initialized model of ``family`` (``yolov8-seg``/``yolo11-seg``) at ``scale`` with
    ``nc`` classes, e.g. to train or to save as an edgeseg checkpoint."""
    from .arch import architecture

    arch = architecture(family, scale, nc)
    if names is not None and len(names) != nc:
        raise ModelLoadError(f"expected {nc} class names, got {len(names)}")
    model = SegmentationModel(arch, names).float().eval()
    return LoadedModel(model, model.names, _imgsz(imgsz), Path(f"{family.split('-')[0]}{scale}-seg"), "", "edgeseg",
                       {"arch_name": _arch_name(arch)})


# --------------------------------------------------------------------------- reading


def _read_pickle(path: Path) -> Tuple[Any, TorchArchive]:
    """Unpickle a torch.save zip through :mod:`.unpickle` (never ``torch.load``, never TorchScript)."""
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(
            f"{path}: not a PyTorch checkpoint (expected a torch zip archive as written by torch.save, "
            f"found {_sniff(path)})"
        )
    return read_checkpoint(path)


def _sniff(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"\x80") and len(head) > 1 and head[1] <= 5:
        return "a legacy (pre-1.6) torch pickle, which edgeseg does not read; re-save it with a current torch"
    if head.startswith(b"\x08") or b"onnx" in head.lower():
        return "what looks like an ONNX model"
    return f"{len(head)}+ bytes starting with {head[:8]!r}"


def _read_safetensors(path: Path) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor]]:
    try:
        from safetensors import safe_open
    except ImportError as exc:
        raise ModelLoadError("reading .safetensors needs safetensors: pip install 'edgeseg[convert]'") from exc
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise ModelLoadError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from exc
    if FORMAT_NAME not in meta:
        raise ModelLoadError(
            f"{path}: safetensors file without an edgeseg config (expected header metadata key "
            f"{FORMAT_NAME!r}, found keys {sorted(meta)})"
        )
    try:
        config = json.loads(meta[FORMAT_NAME])
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path}: the edgeseg config in the header is not valid JSON ({exc})") from exc
    return config, state


def _from_config(path: Path, digest: str, config: Dict[str, Any], state: Dict[str, Any]) -> LoadedModel:
    if config.get("format") != FORMAT_NAME or "arch" not in config:
        raise ModelLoadError(f"{path}: expected an edgeseg config with 'format' and 'arch', found keys "
                             f"{sorted(map(str, config))[:8]}")
    arch = config["arch"]
    _validate(path, arch)
    names = _names(path, config.get("names"), arch["nc"])
    imgsz = _imgsz(config.get("imgsz", 640), path)
    model = _build(path, arch, names, state)
    return LoadedModel(model, model.names, imgsz, path, digest, "edgeseg", {"arch_name": _arch_name(config["arch"])})


def _from_ultralytics(path: Path, digest: str, ckpt: Any) -> LoadedModel:
    if not isinstance(ckpt, dict):
        raise ModelLoadError(f"{path}: expected a checkpoint dict with a 'model' entry, found {_describe(ckpt)}")
    if all(isinstance(v, TensorRef) for v in ckpt.values()) and ckpt:
        raise ModelLoadError(
            f"{path}: found a bare state_dict ({len(ckpt)} tensors) without an architecture; "
            "expected an Ultralytics checkpoint or an edgeseg checkpoint"
        )
    net = ckpt.get("ema") or ckpt.get("model")
    if net is None:
        raise ModelLoadError(f"{path}: expected a checkpoint with a 'model' or 'ema' entry, found {_describe(ckpt)}")
    if not isinstance(net, Placeholder) or not isinstance(net.state, dict):
        raise ModelLoadError(f"{path}: expected a pickled Ultralytics model under 'model', found {_describe(net)}")
    attrs = net.state
    arch = attrs.get("yaml")
    if not isinstance(arch, dict):
        raise ModelLoadError(
            f"{path}: the pickled {net.qualname()} has no architecture description ('yaml' attribute); "
            "found attributes " + ", ".join(sorted(k for k in attrs if not k.startswith("_")))
        )
    arch = dict(arch)
    if not arch.get("scale") and isinstance(arch.get("scales"), dict) and arch["scales"]:
        arch["scale"] = _guess_scale(arch)
    _validate(path, arch)
    names = _names(path, attrs.get("names"), arch["nc"])
    args = attrs.get("args") if isinstance(attrs.get("args"), dict) else ckpt.get("train_args") or {}
    imgsz = _imgsz(args.get("imgsz", 640) if isinstance(args, dict) else 640, path)
    state = module_tree_state_dict(net, str(path))
    model = _build(path, arch, names, state)
    info = {
        "arch_name": _arch_name(arch),
        "ultralytics_version": _text(ckpt.get("version")),
        "date": _text(ckpt.get("date")),
        "license": _text(ckpt.get("license")),
        "weights": "ema" if ckpt.get("ema") is not None else "model",
        "pickled_class": net.qualname(),
    }
    return LoadedModel(model, model.names, imgsz, path, digest, "ultralytics", info)


def _build(path: Path, arch: Dict[str, Any], names: Dict[int, str], state: Dict[str, Any]) -> SegmentationModel:
    # built first on the meta device (no memory): the size is checked and the weights' shapes
    # compared before one tensor is read or allocated
    with torch.device("meta"):
        probe = SegmentationModel(arch, names or None)
    count = sum(p.numel() for p in probe.parameters())
    if count > MAX_PARAMETERS:
        raise ModelLoadError(f"{path}: the architecture describes {count / 1e6:.0f}M parameters "
                             f"(at most {MAX_PARAMETERS / 1e6:.0f}M accepted; YOLOv8x-seg has 72M)")
    ours = probe.state_dict()
    bad = sorted(str(k) for k, v in state.items() if not isinstance(v, (TensorRef, torch.Tensor)))
    if bad:
        raise ModelLoadError(f"{path}: state_dict entries that are not tensors: {', '.join(bad[:3])}")
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(map(str, set(state) - set(ours)))
    wrong = [
        f"{k} {_shape(state[k])} (expected {tuple(ours[k].shape)})"
        for k in ours
        if k in state and _shape(state[k]) != tuple(ours[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(f"{len(wrong)} with another shape (first: {', '.join(wrong[:3])})")
        raise ModelLoadError(
            f"{path}: the weights do not fit the architecture {_arch_name(arch)!r} "
            f"(nc={arch.get('nc')}, scale={arch.get('scale')!r}): " + "; ".join(parts)
        )
    tensors = {k: v.materialize() if isinstance(v, TensorRef) else v for k, v in state.items()}
    bad_dtype = [k for k, v in tensors.items() if v.is_floating_point() != ours[k].is_floating_point()]
    if bad_dtype:
        raise ModelLoadError(f"{path}: {len(bad_dtype)} tensors of the wrong kind (first: {bad_dtype[0]} is "
                             f"{tensors[bad_dtype[0]].dtype}, expected {ours[bad_dtype[0]].dtype})")
    model = SegmentationModel(arch, names or None)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in tensors.items()})
    return model.float().eval()


def _shape(v: Any) -> Tuple[Any, ...]:
    shape = v.shape
    return tuple(shape) if isinstance(shape, (tuple, list, torch.Size)) else (shape,)


def _guess_scale(arch: Dict[str, Any]) -> str:
    m = re.search(r"yolo(?:v\d+|\d+)([nslmx])", str(arch.get("yaml_file", "")))
    return m.group(1) if m else next(iter(arch["scales"]))


def _arch_name(arch: Dict[str, Any]) -> str:
    if arch.get("family"):
        return f"{arch['family'].split('-')[0]}{arch.get('scale', '')}-seg"
    m = re.search(r"(yolo(?:v\d+|\d+))[nslmx]?(-seg)?", str(arch.get("yaml_file", "")))
    if m:
        return f"{m.group(1)}{arch.get('scale', '')}-seg"
    return "custom-seg"


def _validate(path: Path, arch: Any) -> None:
    try:
        validate_architecture(arch)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{path}: {exc}") from None


def _names(path: Path, raw: Any, nc: int) -> Dict[int, str]:
    """Class names from a file: a list of strings or a mapping {id: string} with ids 0..nc-1."""
    if raw is None:
        return {}
    if isinstance(raw, (list, tuple)):
        items = list(enumerate(raw))
    elif isinstance(raw, dict):
        items = list(raw.items())
    else:
        raise ModelLoadError(f"{path}: class names must be a list or a mapping of strings, found {type(raw).__name__}")

    def key(k: Any) -> Optional[int]:
        if isinstance(k, int) and not isinstance(k, bool):
            return k
        return int(k) if isinstance(k, str) and k.isdigit() and len(k) < 7 else None

    out = {key(k): v for k, v in items}
    bad = [f"{k!r}: {type(v).__name__}" for k, v in items if key(k) is None or not isinstance(v, str) or len(v) > 256]
    if bad or len(out) != len(items):
        raise ModelLoadError(f"{path}: class names must map ids to strings (of at most 256 characters), "
                             f"found {', '.join(bad[:3]) or 'duplicate ids'}")
    outside = sorted(k for k in out if not 0 <= k < nc)  # type: ignore[operator]
    if outside:
        raise ModelLoadError(f"{path}: class names for ids outside 0..{nc - 1} (nc={nc}): {outside[:3]}")
    return {i: out.get(i, f"class{i}") for i in range(nc)} if out else {}


def _imgsz(v: Any, path: Optional[Path] = None) -> Tuple[int, int]:
    vals = list(v) if isinstance(v, (list, tuple)) and len(v) in (1, 2) else [v]
    if not all(isinstance(x, numbers.Integral) and not isinstance(x, bool) and 1 <= x <= MAX_IMGSZ for x in vals):
        raise ModelLoadError(f"{path or 'imgsz'}: image size must be one or two integers in 1..{MAX_IMGSZ}, "
                             f"found {str(v)[:60]}")
    return (int(vals[0]), int(vals[-1]))


def _text(v: Any) -> Optional[str]:
    return v[:200] if isinstance(v, str) else None


def _describe(obj: Any) -> str:
    if isinstance(obj, Placeholder):
        return f"a pickled {obj.qualname()}"
    if isinstance(obj, dict):
        return f"a dict with keys {sorted(k if isinstance(k, str) else type(k).__name__ for k in obj)[:8]}"
    return f"a {type(obj).__name__}"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


# --------------------------------------------------------------------------- writing


def save_checkpoint(loaded: LoadedModel, out: Union[str, Path], half: bool = False) -> Path:
    """Write ``loaded`` as an edgeseg checkpoint (``.safetensors`` or ``.pt``, by suffix), atomically.

    The weights are the unfused ``state_dict`` (fp16 with ``half``)."""
    out = Path(out)
    if loaded.model.fused:
        raise ModelLoadError("save_checkpoint needs an unfused model (fusing drops the BatchNorm parameters)")
    config = loaded.config()
    state = {k: (v.half() if half and v.is_floating_point() else v).contiguous() for k, v in loaded.model.state_dict().items()}
    if out.suffix.lower() not in (".safetensors", ".pt", ".pth"):
        raise ModelLoadError(f"edgeseg checkpoints end in .safetensors or .pt, got {out.name!r}")
    from edgeseg.io import atomic_write

    with atomic_write(out) as tmp:
        if out.suffix.lower() == ".safetensors":
            from safetensors.torch import save_file

            save_file(state, str(tmp), metadata={FORMAT_NAME: json.dumps(config)})
        else:
            torch.save({FORMAT_NAME: config, "state_dict": state}, tmp)
    return out
