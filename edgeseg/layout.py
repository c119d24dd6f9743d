"""Which model output is which: identified from metadata, names and tensor shapes, never position.

Layouts understood (N anchors = sum of (H/s)(W/s) over strides 8, 16, 32; nc classes; nm mask
coefficients; the protos tensor is (1, nm, H/4, W/4) NCHW or (1, H/4, W/4, nm) NHWC):

- ``raw``: one prediction tensor (1, 4+nc+nm, N) or transposed (1, N, 4+nc+nm); boxes are
  xywh in input pixels, or normalized to 0-1 (TFLite exports).
- ``nms``: NMS inside the model, (1, K, 6+nm): xyxy, score, class, coefficients.
- ``split`` (edgeseg's own, for int8): separate tensors ``boxes`` (1, N, 4) xywh, ``scores``
  (1, N, nc), ``coefs`` (1, N, nm) (each may be transposed), plus protos. Roles come from the
  ``split_outputs`` metadata, else from tensor names, else from shapes.

Detection-only models (no protos) decode with ``nm = 0``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

from .errors import LayoutError
from .metadata import ModelMeta

__all__ = ["OutputLayout", "resolve_layout", "anchor_count"]

STRIDES = (8, 16, 32)
SPLIT_ROLES = ("boxes", "scores", "coefs")
_NAME_HINTS = {
    "boxes": ("box", "bbox", "xywh"),
    "scores": ("score", "cls", "conf", "class"),
    "coefs": ("coef", "mask", "mc"),
}


def anchor_count(input_hw: Tuple[int, int], strides: Tuple[int, ...] = STRIDES) -> int:
    """Anchor points of a YOLO head for an input of (H, W)."""
    h, w = input_hw
    return sum(-(-h // s) * -(-w // s) for s in strides)


@dataclass
class OutputLayout:
    """The resolved meaning of a model's outputs."""

    kind: str  # "raw" | "nms" | "split"
    nc: int
    nm: int
    pred: Optional[str] = None  # raw / nms tensor name
    channels_last: bool = False  # raw/split: (1, N, C) instead of (1, C, N)
    protos: Optional[str] = None
    protos_nhwc: bool = False
    split: Dict[str, str] = field(default_factory=dict)  # role -> tensor name
    split_channels_last: Dict[str, bool] = field(default_factory=dict)
    boxes_normalized: Optional[bool] = None  # None: decided from values on first inference

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"kind": self.kind, "num_classes": self.nc, "mask_dim": self.nm}
        if self.pred:
            order = "one row per detection" if self.kind == "nms" else ("anchors-first" if self.channels_last else "anchors-last")
            d["predictions"] = {"name": self.pred, "order": order}
        if self.split:
            d["split"] = dict(self.split)
        if self.protos:
            d["protos"] = {"name": self.protos, "layout": "NHWC" if self.protos_nhwc else "NCHW"}
        d["boxes"] = "normalized" if self.boxes_normalized else ("pixels" if self.boxes_normalized is False else "auto")
        return d


def _protos(shapes: Mapping[str, Tuple[int, ...]], input_hw: Tuple[int, int]) -> Tuple[Optional[str], bool, int]:
    four = [n for n, s in shapes.items() if len(s) == 4]
    if not four:
        return None, False, 0
    if len(four) > 1:
        raise LayoutError(f"expected at most one 4-D mask-prototype output, found {len(four)}: "
                          + ", ".join(f"{n}{tuple(shapes[n])}" for n in four))
    name = four[0]
    s = shapes[name]
    h, w = input_hw
    if s[2] * 4 == h and s[3] * 4 == w:
        return name, False, int(s[1])
    if s[1] * 4 == h and s[2] * 4 == w:
        return name, True, int(s[3])
    # not the usual 1/4 scale: the channel axis is the smaller of axis 1 and 3
    nhwc = s[3] < s[1]
    return name, nhwc, int(s[3] if nhwc else s[1])


def _orient(shape: Tuple[int, ...], n_anchors: int) -> Tuple[bool, int]:
    """(channels_last, channels) of a (1, C, N) or (1, N, C) tensor."""
    if shape[2] == n_anchors:
        return False, int(shape[1])
    if shape[1] == n_anchors:
        return True, int(shape[2])
    # unknown anchor count (unusual strides): anchors are the longer axis
    return (shape[1] > shape[2]), int(min(shape[1], shape[2]))


def resolve_layout(shapes: Mapping[str, Tuple[int, ...]], input_hw: Tuple[int, int], meta: ModelMeta) -> OutputLayout:
    """Identify the layout from concrete output shapes (batch 1), the model input size and metadata."""
    shapes = {n: tuple(int(d) for d in s) for n, s in shapes.items()}
    for n, s in shapes.items():
        if len(s) not in (3, 4) or s[0] != 1:
            raise LayoutError(f"output {n!r} has shape {s}; expected batch-1 tensors of rank 3 (predictions) or 4 (protos)")
    protos, protos_nhwc, nm = _protos(shapes, input_hw)
    rest = {n: s for n, s in shapes.items() if n != protos}
    n_anchors = anchor_count(input_hw)
    names_nc = len(meta.names)

    if meta.output_layout == "split" or meta.split_outputs or len(rest) >= 3:
        return _resolve_split(rest, n_anchors, nm, protos, protos_nhwc, meta)
    if len(rest) != 1:
        raise LayoutError(
            "expected one prediction tensor (plus an optional 4-D protos tensor) or the split layout "
            f"(boxes, scores, coefs), found {len(rest)} non-proto outputs: "
            + ", ".join(f"{n}{s}" for n, s in rest.items())
        )
    pred, s = next(iter(rest.items()))
    nms_like = meta.output_layout == "nms" or (
        n_anchors not in (s[1], s[2]) and s[2] == 6 + nm and (names_nc == 0 or s[1] != 4 + names_nc + nm)
    )
    if nms_like:
        if s[2] != 6 + nm:
            raise LayoutError(f"NMS-style output {pred!r} has shape {s}; expected (1, K, {6 + nm}) = xyxy, score, class + {nm} coefficients")
        return OutputLayout("nms", nc=max(names_nc, 1), nm=nm, pred=pred, channels_last=True,
                            protos=protos, protos_nhwc=protos_nhwc, boxes_normalized=meta.boxes_normalized)
    channels_last, c = _orient(s, n_anchors)
    nc = c - 4 - nm
    if nc < 1:
        raise LayoutError(f"prediction {pred!r} has {c} channels; with {nm} mask coefficients that leaves {nc} classes "
                          f"(expected 4 box + nc class + nm coefficient channels)")
    if names_nc and names_nc != nc:
        raise LayoutError(f"prediction {pred!r} has {c} channels = 4 + {nc} classes + {nm} coefficients, "
                          f"but the model names {names_nc} classes")
    return OutputLayout("raw", nc=nc, nm=nm, pred=pred, channels_last=channels_last,
                        protos=protos, protos_nhwc=protos_nhwc, boxes_normalized=meta.boxes_normalized)


def _resolve_split(rest: Mapping[str, Tuple[int, ...]], n_anchors: int, nm: int, protos: Optional[str],
                   protos_nhwc: bool, meta: ModelMeta) -> OutputLayout:
    needed = SPLIT_ROLES if protos is not None else SPLIT_ROLES[:2]
    roles: Dict[str, str] = {}
    for role, name in meta.split_outputs.items():
        if role in needed:
            if name not in rest:
                raise LayoutError(f"metadata maps {role!r} to output {name!r}, which the model does not have "
                                  f"(outputs: {', '.join(rest)})")
            roles[role] = name
    free = [n for n in rest if n not in roles.values()]
    for role in needed:  # by name
        if role in roles:
            continue
        hits = [n for n in free if any(h in n.lower() for h in _NAME_HINTS[role])]
        if len(hits) == 1:
            roles[role] = hits[0]
            free.remove(hits[0])
    orient = {n: _orient(s, n_anchors) for n, s in rest.items()}
    for role in needed:  # by shape, for what is left
        if role in roles:
            continue
        want = {"boxes": 4, "coefs": nm}.get(role)
        hits = [n for n in free if want is not None and orient[n][1] == want]
        if role == "scores":
            hits = list(free) if len(free) == 1 else []
        if len(hits) != 1:
            raise LayoutError(
                f"cannot tell which output holds {role!r} in the split layout; outputs: "
                + ", ".join(f"{n}{rest[n]}" for n in rest)
                + ". Name them (boxes/scores/coefs) or set the 'split_outputs' metadata."
            )
        roles[role] = hits[0]
        free.remove(hits[0])
    if orient[roles["boxes"]][1] != 4:
        raise LayoutError(f"split output {roles['boxes']!r} must hold 4 box values per anchor, found shape {rest[roles['boxes']]}")
    if protos is not None and orient[roles["coefs"]][1] != nm:
        raise LayoutError(f"split output {roles['coefs']!r} has {orient[roles['coefs']][1]} coefficients, protos have {nm}")
    nc = orient[roles["scores"]][1]
    if meta.names and len(meta.names) != nc:
        raise LayoutError(f"scores output {roles['scores']!r} has {nc} classes but the model names {len(meta.names)}")
    return OutputLayout("split", nc=nc, nm=nm if protos else 0, protos=protos, protos_nhwc=protos_nhwc,
                        split=roles, split_channels_last={r: orient[n][0] for r, n in roles.items()},
                        boxes_normalized=meta.boxes_normalized)
