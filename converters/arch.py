"""Declarative descriptions of the YOLOv8-seg and YOLO11-seg families, and the builder.

An architecture is a plain dict in the Ultralytics YAML shape (so a checkpoint's own ``yaml``
attribute can be used as is)::

    {"nc": 80, "scale": "n",
     "scales": {"n": [depth, width, max_channels], ...},
     "backbone": [[from, repeats, "Block", [args...]], ...],
     "head":     [[from, repeats, "Block", [args...]], ...]}

``from`` is -1 (previous layer) or a layer index / list of indices; ``repeats`` is scaled by
``depth`` and channel arguments by ``width`` (capped at ``max_channels``, rounded up to 8).
Only the blocks of :mod:`.blocks` and the :class:`.head.Segment` head are accepted; anything
else raises :class:`edgeseg.errors.ModelLoadError` naming the block.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

from torch import nn

from edgeseg.errors import ModelLoadError

from .blocks import C2PSA, SPPF, C2f, C3k2, Concat, Conv, Upsample
from .head import Segment

__all__ = ["ARCHITECTURES", "ARCH_BOUNDS", "architecture", "build_layers", "BuiltLayers", "make_divisible",
           "validate_architecture"]

_V8_SCALES = {"n": [0.33, 0.25, 1024], "s": [0.33, 0.50, 1024], "m": [0.67, 0.75, 768],
              "l": [1.00, 1.00, 512], "x": [1.00, 1.25, 512]}
_V11_SCALES = {"n": [0.50, 0.25, 1024], "s": [0.50, 0.50, 1024], "m": [0.50, 1.00, 512],
               "l": [1.00, 1.00, 512], "x": [1.00, 1.50, 512]}

_YOLOV8_SEG = {
    "scales": _V8_SCALES,
    "backbone": [
        [-1, 1, "Conv", [64, 3, 2]],  # 0  P1/2
        [-1, 1, "Conv", [128, 3, 2]],  # 1  P2/4
        [-1, 3, "C2f", [128, True]],
        [-1, 1, "Conv", [256, 3, 2]],  # 3  P3/8
        [-1, 6, "C2f", [256, True]],
        [-1, 1, "Conv", [512, 3, 2]],  # 5  P4/16
        [-1, 6, "C2f", [512, True]],
        [-1, 1, "Conv", [1024, 3, 2]],  # 7  P5/32
        [-1, 3, "C2f", [1024, True]],
        [-1, 1, "SPPF", [1024, 5]],  # 9
    ],
    "head": [
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
        [[-1, 6], 1, "Concat", [1]],
        [-1, 3, "C2f", [512]],  # 12
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
        [[-1, 4], 1, "Concat", [1]],
        [-1, 3, "C2f", [256]],  # 15 (P3/8)
        [-1, 1, "Conv", [256, 3, 2]],
        [[-1, 12], 1, "Concat", [1]],
        [-1, 3, "C2f", [512]],  # 18 (P4/16)
        [-1, 1, "Conv", [512, 3, 2]],
        [[-1, 9], 1, "Concat", [1]],
        [-1, 3, "C2f", [1024]],  # 21 (P5/32)
        [[15, 18, 21], 1, "Segment", ["nc", 32, 256]],
    ],
}

_YOLO11_SEG = {
    "scales": _V11_SCALES,
    "backbone": [
        [-1, 1, "Conv", [64, 3, 2]],  # 0  P1/2
        [-1, 1, "Conv", [128, 3, 2]],  # 1  P2/4
        [-1, 2, "C3k2", [256, False, 0.25]],
        [-1, 1, "Conv", [256, 3, 2]],  # 3  P3/8
        [-1, 2, "C3k2", [512, False, 0.25]],
        [-1, 1, "Conv", [512, 3, 2]],  # 5  P4/16
        [-1, 2, "C3k2", [512, True]],
        [-1, 1, "Conv", [1024, 3, 2]],  # 7  P5/32
        [-1, 2, "C3k2", [1024, True]],
        [-1, 1, "SPPF", [1024, 5]],  # 9
        [-1, 2, "C2PSA", [1024]],  # 10
    ],
    "head": [
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
        [[-1, 6], 1, "Concat", [1]],
        [-1, 2, "C3k2", [512, False]],  # 13
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
        [[-1, 4], 1, "Concat", [1]],
        [-1, 2, "C3k2", [256, False]],  # 16 (P3/8)
        [-1, 1, "Conv", [256, 3, 2]],
        [[-1, 13], 1, "Concat", [1]],
        [-1, 2, "C3k2", [512, False]],  # 19 (P4/16)
        [-1, 1, "Conv", [512, 3, 2]],
        [[-1, 10], 1, "Concat", [1]],
        [-1, 2, "C3k2", [1024, True]],  # 22 (P5/32)
        [[16, 19, 22], 1, "Segment", ["nc", 32, 256]],
    ],
}

#: family name -> description (without ``nc``/``scale``, see :func:`architecture`)
ARCHITECTURES: Dict[str, Dict[str, Any]] = {"yolov8-seg": _YOLOV8_SEG, "yolo11-seg": _YOLO11_SEG}


def architecture(family: str, scale: str = "n", nc: int = 80) -> Dict[str, Any]:
    """The description of ``family`` (``"yolov8-seg"`` or ``"yolo11-seg"``) at ``scale`` with ``nc`` classes."""
    if family not in ARCHITECTURES:
        raise ModelLoadError(f"unknown architecture {family!r}; expected one of {', '.join(ARCHITECTURES)}")
    arch = copy.deepcopy(ARCHITECTURES[family])
    if scale not in arch["scales"]:
        raise ModelLoadError(f"unknown scale {scale!r} for {family}; expected one of {', '.join(arch['scales'])}")
    arch.update(nc=int(nc), scale=scale, family=family)
    return arch


#: what :func:`validate_architecture` accepts (Ultralytics' largest scales are far inside each bound)
ARCH_BOUNDS: Dict[str, Any] = {
    "nc": (1, 10_000),  # class count
    "depth": (0.01, 4.0),  # depth multiple (repeats scale)
    "width": (0.01, 4.0),  # width multiple (channels scale)
    "max_channels": (8, 4096),
    "rows": 128,  # backbone + head layers
    "repeats": 64,  # per row, before and after the depth multiple
    "channels": 4096,  # any layer's output channels, after the width multiple
    "kernel": 15,
    "stride": 4,
    "upsample": 8,
    "mask_coefficients": 256,
    "args": 8,
}


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _bounded_int(v: Any, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def validate_architecture(arch: Any) -> None:
    """Check an architecture description against :data:`ARCH_BOUNDS` before anything is built.

    Every value comes from a file (a checkpoint's ``yaml`` attribute, a safetensors config), so
    types, ranges and layer references are checked; raises :class:`ModelLoadError` naming the
    value. ``build_layers`` calls it first."""
    b = ARCH_BOUNDS
    if not isinstance(arch, dict):
        raise ModelLoadError(f"architecture: expected a mapping, found {type(arch).__name__}")
    nc = arch.get("nc")
    if not _bounded_int(nc, *b["nc"]):
        raise ModelLoadError(f"architecture: nc (class count) must be an integer in {b['nc'][0]}..{b['nc'][1]}, "
                             f"found {_short(nc)}")
    scales = arch.get("scales")
    if scales:
        if not isinstance(scales, dict) or not all(isinstance(k, str) for k in scales):
            raise ModelLoadError(f"architecture: scales must map names to [depth, width, max_channels], found {_short(scales)}")
        scale = arch.get("scale") or next(iter(scales))
        if scale not in scales:
            raise ModelLoadError(f"architecture: scale {_short(scale)} is not one of {', '.join(map(str, scales))}")
        triple = scales[scale]
        if not (isinstance(triple, (list, tuple)) and len(triple) == 3):
            raise ModelLoadError(f"architecture: scale {scale!r} must be [depth, width, max_channels], found {_short(triple)}")
        depth, width, max_ch = triple
    else:
        depth, width, max_ch = arch.get("depth_multiple", 1.0), arch.get("width_multiple", 1.0), 1024
    for what, v, (lo, hi) in (("depth multiple", depth, b["depth"]), ("width multiple", width, b["width"])):
        if not (_num(v) and lo <= v <= hi):
            raise ModelLoadError(f"architecture: {what} must be a number in {lo}..{hi}, found {_short(v)}")
    if not _bounded_int(max_ch, *b["max_channels"]):
        raise ModelLoadError(f"architecture: max_channels must be an integer in {b['max_channels'][0]}.."
                             f"{b['max_channels'][1]}, found {_short(max_ch)}")
    if not _bounded_int(arch.get("channels", 3), 1, 4):
        raise ModelLoadError(f"architecture: input channels must be 1..4, found {_short(arch.get('channels'))}")
    parts = [arch.get("backbone"), arch.get("head")]
    if not all(isinstance(p, (list, tuple)) for p in parts):
        raise ModelLoadError("architecture: expected 'backbone' and 'head' lists of layers, found "
                             f"{_short(parts[0])} and {_short(parts[1])}")
    rows = list(parts[0]) + list(parts[1])
    if not 1 <= len(rows) <= b["rows"]:
        raise ModelLoadError(f"architecture: expected 1..{b['rows']} layers, found {len(rows)}")
    for i, row in enumerate(rows):
        if not (isinstance(row, (list, tuple)) and len(row) == 4):
            raise ModelLoadError(f"layer {i}: expected [from, repeats, block, args], found {_short(row)}")
        f, n, name, args = row
        srcs = [f] if isinstance(f, int) else f
        if not (isinstance(srcs, (list, tuple)) and 1 <= len(srcs) <= 8
                and all(isinstance(s, int) and not isinstance(s, bool) and (s == -1 or 0 <= s < i) for s in srcs)):
            raise ModelLoadError(f"layer {i}: 'from' must be -1 or earlier layer indices, found {_short(f)}")
        if not _bounded_int(n, 1, b["repeats"]) or max(round(n * depth), 1) > b["repeats"]:
            raise ModelLoadError(f"layer {i}: repeats must be an integer in 1..{b['repeats']} (after the depth "
                                 f"multiple {depth}), found {_short(n)}")
        if not isinstance(name, str):
            raise ModelLoadError(f"layer {i}: block name must be a string, found {_short(name)}")
        if not (isinstance(args, (list, tuple)) and len(args) <= b["args"]
                and all(a is None or isinstance(a, (bool, str)) and len(str(a)) <= 32 or _num(a) for a in args)):
            raise ModelLoadError(f"layer {i}: block arguments must be a short list of numbers/strings, found {_short(args)}")
        if name in ("Conv", "C2f", "C3k2", "C2PSA", "SPPF"):
            c = args[0] if args else None
            if not _bounded_int(c, 1, b["channels"]) or make_divisible(min(c, max_ch) * width, 8) > b["channels"]:
                raise ModelLoadError(f"layer {i}: {name} channels must be an integer in 1..{b['channels']} "
                                     f"(after the width multiple), found {_short(c)}")
        if name == "Conv" and len(args) > 1 and not (_bounded_int(args[1], 1, b["kernel"])
                                                     and _bounded_int(args[2] if len(args) > 2 else 1, 1, b["stride"])):
            raise ModelLoadError(f"layer {i}: Conv kernel must be 1..{b['kernel']} and stride 1..{b['stride']}, "
                                 f"found {_short(args)}")
        if name == "SPPF" and len(args) > 1 and not _bounded_int(args[1], 1, b["kernel"]):
            raise ModelLoadError(f"layer {i}: SPPF kernel must be 1..{b['kernel']}, found {_short(args[1])}")
        if name in ("nn.Upsample", "Upsample") and len(args) > 1 and not (
                _num(args[1]) and 1 <= args[1] <= b["upsample"] and float(args[1]).is_integer()):
            raise ModelLoadError(f"layer {i}: upsampling factor must be an integer 1..{b['upsample']}, found {_short(args[1])}")
        if name == "Segment":
            nm = args[1] if len(args) > 1 else 32
            npr = args[2] if len(args) > 2 else 256
            if not (_bounded_int(nm, 1, b["mask_coefficients"]) and _bounded_int(npr, 1, b["channels"])):
                raise ModelLoadError(f"layer {i}: Segment needs 1..{b['mask_coefficients']} mask coefficients and "
                                     f"1..{b['channels']} prototype channels, found {_short(args)}")
            if isinstance(f, int) or len(srcs) < 1:
                raise ModelLoadError(f"layer {i}: Segment reads a list of feature layers, found {_short(f)}")
        elif name == "Concat" and args and not _bounded_int(args[0], -4, 3):
            raise ModelLoadError(f"layer {i}: Concat dimension must be -4..3, found {_short(args[0])}")


def _short(v: Any, n: int = 80) -> str:
    """``repr`` of a value from a file, cut to ``n`` characters (and safe on deep nesting)."""
    try:
        text = repr(v)
    except (RecursionError, ValueError):  # deeply nested, or int too long to print
        text = f"<{type(v).__name__}>"
    return text if len(text) <= n else text[: n - 3] + "..."


def make_divisible(x: float, divisor: int = 8) -> int:
    """Smallest multiple of ``divisor`` that is >= ``x``."""
    return int(math.ceil(x / divisor) * divisor)


@dataclass
class BuiltLayers:
    """Result of :func:`build_layers`: the layers (each with ``.f`` = its input indices and
    ``.i`` = its index), the indices whose outputs later layers read, and the head's strides."""

    layers: List[nn.Module]
    save: List[int]
    strides: Tuple[int, ...]


def _none(v: Any) -> Any:
    return None if v == "None" else v


def build_layers(arch: Dict[str, Any]) -> BuiltLayers:
    """Build the layers of ``arch`` (see the module docstring). Input: 3-channel images.

    ``arch`` is checked by :func:`validate_architecture` first."""
    validate_architecture(arch)
    try:
        nc = int(arch["nc"])
        scales = arch.get("scales") or {}
        scale = arch.get("scale") or (next(iter(scales)) if scales else None)
        depth, width, max_ch = scales[scale] if scales else (arch.get("depth_multiple", 1.0), arch.get("width_multiple", 1.0), 1024)
        rows = list(arch["backbone"]) + list(arch["head"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"malformed architecture description: missing or invalid {exc}") from exc

    ch: List[int] = [int(arch.get("channels", 3))]
    stride: List[int] = []
    layers: List[nn.Module] = []
    save: List[int] = []
    has_c3k2 = False
    head_strides: Tuple[int, ...] = ()
    for i, row in enumerate(rows):
        try:
            f, n, name, args = row
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"layer {i}: expected [from, repeats, block, args], found {row!r}") from exc
        args = [_none(a) for a in args]
        n = max(round(n * depth), 1) if n > 1 else n
        srcs = [f] if isinstance(f, int) else list(f)
        c_in = [ch[s] if s == -1 else ch[s + 1] for s in srcs]
        s_in = [(stride[s] if stride else 1) if s == -1 else stride[s] for s in srcs]

        def width_of(c: int) -> int:
            return make_divisible(min(c, max_ch) * width, 8)

        if name == "Conv":
            c2 = width_of(args[0])
            k = args[1] if len(args) > 1 else 1
            s = args[2] if len(args) > 2 else 1
            m: nn.Module = Conv(c_in[0], c2, k, s)
            out_stride = s_in[0] * s
        elif name in ("C2f", "C3k2", "C2PSA"):
            c2 = width_of(args[0])
            extra = list(args[1:])
            if name == "C3k2":
                has_c3k2 = True
                if scale in ("m", "l", "x"):
                    extra = [True] + extra[1:] if extra else [True]
            block = {"C2f": C2f, "C3k2": C3k2, "C2PSA": C2PSA}[name]
            m = block(c_in[0], c2, n, *extra)
            n, out_stride = 1, s_in[0]
        elif name == "SPPF":
            c2 = width_of(args[0])
            m = SPPF(c_in[0], c2, *args[1:2])
            out_stride = s_in[0]
        elif name in ("nn.Upsample", "Upsample"):
            factor = int(args[1]) if len(args) > 1 else 2
            if (len(args) > 2 and args[2] != "nearest") or args[0] is not None:
                raise ModelLoadError(f"layer {i}: only nearest upsampling by a factor is supported, found {args!r}")
            m, c2, out_stride = Upsample(factor), c_in[0], max(s_in[0] // factor, 1)
        elif name == "Concat":
            m, c2, out_stride = Concat(args[0] if args else 1), sum(c_in), s_in[0]
        elif name == "Segment":
            nm = int(args[1]) if len(args) > 1 else 32
            npr = width_of(int(args[2]) if len(args) > 2 else 256)
            m = Segment(nc, nm, npr, c_in, legacy=not has_c3k2)
            head_strides = tuple(s_in)
            c2, out_stride = 0, s_in[0]
        else:
            raise ModelLoadError(
                f"layer {i}: unsupported block {name!r}; edgeseg builds Conv, C2f, C3k2, SPPF, C2PSA, "
                "Concat, nn.Upsample and Segment (YOLOv8-seg / YOLO11-seg)"
            )
        if n > 1:
            raise ModelLoadError(f"layer {i}: block {name!r} cannot be repeated (found repeats={n})")
        m.f, m.i = f, i  # type: ignore[assignment]
        save.extend(s % (i + 1) if s < 0 else s for s in srcs if s != -1)
        layers.append(m)
        ch.append(c2)
        stride.append(out_stride)
    if not head_strides:
        raise ModelLoadError("architecture has no Segment head (edgeseg converts segmentation models only)")
    return BuiltLayers(layers, sorted(set(save)), head_strides)
