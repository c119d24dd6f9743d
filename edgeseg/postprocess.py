"""Decode, NMS and per-box masks, numpy (+ OpenCV for resampling) only.

Order of work keeps it cheap: confidence filter first (for int8 outputs in the integer domain, so
only candidate rows are ever dequantized), then decode only the survivors, class-aware NMS, and
masks computed only inside each box at proto resolution (int8 protos dequantized inside that
window only) and resampled only inside the box to source resolution.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from .backend import TensorSpec, dequantize
from .layout import OutputLayout
from .mask_decode import process_masks
from .masks import Masks
from .preprocess import Letterbox

__all__ = ["Decoder", "Detections", "nms", "nms_numpy", "nms_opencv", "process_masks", "score_resolution_warning"]

log = logging.getLogger("edgeseg.runtime")

MAX_WH = 7680  # class offset for batched NMS, as Ultralytics
MAX_NMS = 30000  # candidates kept for NMS, highest scores first
#: an int8 score tensor with fewer levels than this between 0 and 1 cannot rank detections
MIN_SCORE_LEVELS = 64


@dataclass
class Detections:
    """Decoded detections of one image, before they become :class:`~edgeseg.results.Results`."""

    boxes: np.ndarray  # (K, 4) float32 xyxy source pixels
    scores: np.ndarray  # (K,) float32
    class_ids: np.ndarray  # (K,) int64
    masks: Optional[Masks]


def nms_numpy(boxes: np.ndarray, scores: np.ndarray, iou: float, max_det: int) -> np.ndarray:
    """Greedy NMS on xyxy boxes; indices of kept boxes, highest score first. A box is suppressed
    when its IoU with a kept box is greater than ``iou`` (torchvision's rule)."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    keep = []
    while order.size and len(keep) < max_det:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])
        h = np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])
        inter = np.clip(w, 0, None) * np.clip(h, 0, None)
        ious = inter / (areas[i] + areas[rest] - inter + 1e-9)
        order = rest[ious <= iou]
    return np.asarray(keep, dtype=np.int64)


def nms_opencv(boxes: np.ndarray, scores: np.ndarray, iou: float, max_det: int,
               class_ids: Optional[np.ndarray] = None) -> np.ndarray:
    """The same NMS in C++: ``cv2.dnn.NMSBoxesBatched`` (per class) or ``cv2.dnn.NMSBoxes``."""
    import cv2

    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    xywh = boxes.astype(np.float64, copy=True)
    xywh[:, 2:] -= xywh[:, :2]
    # no top_k: OpenCV applies it to the candidates before NMS, not to the results
    if class_ids is None:
        keep = cv2.dnn.NMSBoxes(xywh.tolist(), scores.astype(np.float64).tolist(), 0.0, float(iou))
    else:
        keep = cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores.astype(np.float64).tolist(),
                                       class_ids.astype(np.int64).tolist(), 0.0, float(iou))
    return np.asarray(keep, dtype=np.int64).reshape(-1)[:max_det]


def nms(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou: float, max_det: int,
        agnostic: bool = False, impl: str = "opencv") -> np.ndarray:
    """Class-aware NMS (boxes of different classes never suppress each other); indices of the
    kept boxes, highest score first. ``impl``: ``"opencv"`` or ``"numpy"`` (same boxes kept)."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    if impl == "opencv":
        return nms_opencv(boxes, scores, iou, max_det, None if agnostic else class_ids)
    # float64: a float32 class offset (up to 79 * 7680) would round coordinates to 1/32 px
    b = boxes.astype(np.float64)
    if not agnostic:
        b += (class_ids.astype(np.float64) * MAX_WH)[:, None]
    return nms_numpy(b, scores, iou, max_det)


def score_resolution_warning(layout: OutputLayout, specs: Mapping[str, TensorSpec]) -> Optional[str]:
    """A warning when an integer output carrying class scores is too coarse to rank detections:
    fewer than :data:`MIN_SCORE_LEVELS` quantization levels between 0 and 1 (typical of exports
    that put pixel boxes and 0-1 scores in one int8 tensor). None when the scores are fine."""
    name = layout.pred if layout.kind in ("raw", "nms") else layout.split.get("scores")
    spec = specs.get(name) if name else None
    if spec is None or not spec.quantized:
        return None
    levels = 1.0 / float(spec.scale)  # type: ignore[arg-type]
    if levels >= MIN_SCORE_LEVELS:
        return None
    shared = " (boxes and scores share this one quantized tensor)" if layout.kind in ("raw", "nms") else ""
    return (f"output {name!r} stores class scores as {np.dtype(spec.dtype).name} with scale {spec.scale:.4g}: only "
            f"{levels:.0f} levels between 0 and 1{shared}, so this export collapsed its scores and detections are "
            f"coarse or missing; make the model again with `edgeseg convert --int8` (boxes, scores and mask "
            f"coefficients in separate int8 outputs)")


def _threshold_q(conf: float, spec: Optional[TensorSpec]) -> Optional[float]:
    """The confidence in quantized units, one level low: every q whose dequantized value can pass
    ``conf`` satisfies ``q >= result`` (the exact float test runs on those candidates only)."""
    if spec is None or not spec.quantized:
        return None
    return math.floor(conf / float(spec.scale) + spec.zero_point)  # type: ignore[arg-type]


class Decoder:
    """Turns raw outputs (by name; int8 ones with their :class:`TensorSpec` in ``specs``) into
    :class:`Detections` in source pixels.

    ``multi_label``: a box counts once for every class whose score passes ``conf`` (as COCO-style
    validation does); otherwise once, for its best class (as prediction does).
    Rows with non-finite values (corrupted weights) and boxes without area are dropped; the first
    non-finite row logs one warning. ``val_masks``: masks scaled to the source as Ultralytics'
    validation writes them to COCO JSON (``scale_image``), for mAP comparable with it.
    """

    def __init__(self, layout: OutputLayout, conf: float, iou: float, max_det: int,
                 classes: Optional[Sequence[int]] = None, retina_masks: bool = False, agnostic: bool = False,
                 nms_impl: str = "opencv", multi_label: bool = False,
                 specs: Optional[Mapping[str, TensorSpec]] = None, val_masks: bool = False) -> None:
        self.layout = layout
        self.conf = float(conf)
        self.iou = float(iou)
        self.max_det = int(max_det)
        self.classes = None if classes is None else np.asarray(sorted(set(int(c) for c in classes)), np.int64)
        self.retina = retina_masks
        self.agnostic = agnostic
        self.nms_impl = nms_impl
        self.multi_label = multi_label
        self.val_masks = val_masks
        self.specs: Dict[str, TensorSpec] = dict(specs or {})
        self.warned_nonfinite = False

    def _spec(self, name: Optional[str]) -> Optional[TensorSpec]:
        s = self.specs.get(name) if name else None
        return s if s is not None and s.quantized else None

    def _float(self, name: str, a: np.ndarray) -> np.ndarray:
        spec = self._spec(name)
        return dequantize(a, spec) if spec is not None else (a if a.dtype == np.float32 else a.astype(np.float32))

    # -- candidates ----------------------------------------------------------------------------
    def _candidates(self, out: Dict[str, np.ndarray], input_hw: Tuple[int, int]):
        """(boxes xyxy input px, scores, class ids, coefficients) above the confidence threshold.

        Works on the raw tensors: only the rows of candidate anchors are dequantized."""
        L = self.layout
        h, w = input_hw
        if L.kind == "nms":
            rows = self._float(L.pred, out[L.pred][0])  # type: ignore[arg-type,index]
            rows = rows[rows[:, 4] > self.conf]
            boxes = rows[:, :4].astype(np.float32, copy=True)
            if L.boxes_normalized is None and len(rows):
                L.boxes_normalized = bool(np.abs(boxes[np.isfinite(boxes)]).max(initial=0.0) <= 2.0)
            if L.boxes_normalized:
                boxes *= np.array([w, h, w, h], np.float32)
            return (boxes, rows[:, 4].astype(np.float32), _class_ids(rows[:, 5]),
                    np.ascontiguousarray(rows[:, 6: 6 + L.nm], np.float32))

        # (tensor, channels_last, first channel, spec) of each role
        if L.kind == "raw":
            p = out[L.pred][0]  # type: ignore[index]
            spec = self._spec(L.pred)
            src = {"boxes": (p, 0, spec), "scores": (p, 4, spec), "coefs": (p, 4 + L.nc, spec)}
            cl = {r: L.channels_last for r in src}
        else:
            src = {r: (out[n][0], 0, self._spec(n)) for r, n in L.split.items()}
            cl = dict(L.split_channels_last)
        n_ch = {"boxes": 4, "scores": L.nc, "coefs": L.nm}

        def channels(role: str) -> np.ndarray:  # (C, N) view of the role's channels
            t, c0, _ = src[role]
            return t[:, c0: c0 + n_ch[role]].T if cl[role] else t[c0: c0 + n_ch[role]]

        def rows(role: str, idx: np.ndarray) -> np.ndarray:  # (k, C) float32 rows of the candidates
            t, c0, spec = src[role]
            sel = t[idx, c0: c0 + n_ch[role]] if cl[role] else t[c0: c0 + n_ch[role], idx].T
            return dequantize(sel, spec) if spec is not None else np.asarray(sel, np.float32)

        cls_t = channels("scores")
        s_spec = src["scores"][2]
        best = cls_t.max(axis=0)
        q = _threshold_q(self.conf, s_spec)
        if q is None:
            idx = np.flatnonzero(best > self.conf)
            if not self.warned_nonfinite and not np.isfinite(best).all():
                self._warn_nonfinite(int(np.count_nonzero(~np.isfinite(best))), "class scores")
        else:  # integer domain: a superset, then the exact float test on it
            idx = np.flatnonzero(best >= q)
            idx = idx[dequantize(best[idx], s_spec) > self.conf]
        if L.boxes_normalized is None:
            b = channels("boxes")[:2]
            b = dequantize(b, src["boxes"][2]) if src["boxes"][2] is not None else b
            fin = b[np.isfinite(b)]
            L.boxes_normalized = bool(np.abs(fin).max(initial=0.0) <= 2.0)
        cls_sel = rows("scores", idx)
        if self.multi_label:
            i, class_ids = np.nonzero(cls_sel > self.conf)
            scores = cls_sel[i, class_ids]
            class_ids = class_ids.astype(np.int64)
        else:
            i = np.arange(len(idx))
            class_ids = cls_sel.argmax(axis=1).astype(np.int64)
            scores = cls_sel[i, class_ids]
        xywh = rows("boxes", idx)
        if L.boxes_normalized:
            xywh = xywh * np.array([w, h, w, h], np.float32)
        boxes = np.empty_like(xywh)
        half = xywh[:, 2:] / 2
        boxes[:, :2] = xywh[:, :2] - half
        boxes[:, 2:] = xywh[:, :2] + half
        coefs = rows("coefs", idx) if "coefs" in src and L.nm else np.zeros((len(idx), 0), np.float32)
        if self.multi_label:
            boxes, coefs = boxes[i], coefs[i]
        return boxes, scores.astype(np.float32, copy=False), class_ids, coefs

    def _warn_nonfinite(self, n: int, what: str) -> None:
        if not self.warned_nonfinite:
            self.warned_nonfinite = True
            log.warning("the model output %d non-finite (NaN/inf) %s; those rows are dropped (are the weights "
                        "corrupted?). This warning is shown once.", n, what)

    def _valid(self, boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, coefs: np.ndarray) -> np.ndarray:
        """Rows that are finite and whose box has an area (padded NMS rows, corrupted outputs)."""
        finite = np.isfinite(boxes).all(axis=1) & np.isfinite(scores) & (class_ids >= 0)
        if coefs.size:
            finite &= np.isfinite(coefs).all(axis=1)
        if not finite.all():
            self._warn_nonfinite(int(np.count_nonzero(~finite)), "detection rows")
        with np.errstate(invalid="ignore"):
            return finite & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])

    def __call__(self, out: Dict[str, np.ndarray], lb: Letterbox) -> Detections:
        boxes, src_boxes, scores, class_ids, coefs = self.detect(out, lb)
        return Detections(src_boxes, scores, class_ids, self.masks(out, lb, boxes, src_boxes, coefs))

    def detect(self, out: Dict[str, np.ndarray], lb: Letterbox) -> Tuple[np.ndarray, ...]:
        """Boxes without masks: (input-pixel boxes, source-pixel boxes, scores, class ids,
        mask coefficients) of the kept detections, best first."""
        boxes, scores, class_ids, coefs = self._candidates(out, lb.input_shape)
        sel = self._valid(boxes, scores, class_ids, coefs)
        if self.classes is not None and len(boxes):
            sel &= np.isin(class_ids, self.classes)
        if not sel.all():
            boxes, scores, class_ids, coefs = boxes[sel], scores[sel], class_ids[sel], coefs[sel]
        if len(boxes) > MAX_NMS:
            top = np.argsort(-scores, kind="stable")[:MAX_NMS]
            boxes, scores, class_ids, coefs = boxes[top], scores[top], class_ids[top], coefs[top]
        if self.layout.kind == "nms":
            keep = np.argsort(-scores, kind="stable")[: self.max_det]
        else:
            keep = nms(boxes, scores, class_ids, self.iou, self.max_det, self.agnostic, self.nms_impl)
        boxes, scores, class_ids, coefs = boxes[keep], scores[keep], class_ids[keep], coefs[keep]
        src_boxes = lb.to_source(boxes.copy())
        inside = (src_boxes[:, 2] > src_boxes[:, 0]) & (src_boxes[:, 3] > src_boxes[:, 1])
        if not inside.all():  # boxes entirely in the letterbox padding, outside the image
            boxes, src_boxes, scores, class_ids, coefs = (boxes[inside], src_boxes[inside], scores[inside],
                                                          class_ids[inside], coefs[inside])
        return boxes, src_boxes, scores, class_ids, coefs

    def masks(self, out: Dict[str, np.ndarray], lb: Letterbox, boxes: np.ndarray, src_boxes: np.ndarray,
              coefs: np.ndarray) -> Optional[Masks]:
        """Per-box masks of detections from :meth:`detect` (None for detection-only models)."""
        if self.layout.protos is None:
            return None
        return process_masks(out[self.layout.protos][0], self.layout.protos_nhwc,
                             np.ascontiguousarray(coefs, np.float32), boxes, src_boxes, lb, self.retina,
                             spec=self._spec(self.layout.protos), scale_image=self.val_masks and not self.retina)


def _class_ids(values: np.ndarray) -> np.ndarray:
    """Class ids stored as floats (NMS-inside rows); non-finite ones become -1 (dropped later)."""
    ids = np.full(len(values), -1, np.int64)
    ok = np.isfinite(values)
    ids[ok] = values[ok].astype(np.int64)
    return ids
