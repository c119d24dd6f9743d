"""Decode, NMS and per-box masks, numpy (+ OpenCV for resampling) only.

Order of work keeps it cheap: confidence filter first, then decode only the survivors, class-aware
NMS, and masks computed only inside each box at proto resolution and resampled only inside the box
to source resolution.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from .layout import OutputLayout
from .mask_decode import process_masks
from .masks import Masks
from .preprocess import Letterbox

__all__ = ["Decoder", "Detections", "nms", "nms_numpy", "nms_opencv", "process_masks"]

MAX_WH = 7680  # class offset for batched NMS, as Ultralytics
MAX_NMS = 30000  # candidates kept for NMS, highest scores first


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


class Decoder:
    """Turns dequantized float32 outputs (by name) into :class:`Detections` in source pixels."""

    def __init__(self, layout: OutputLayout, conf: float, iou: float, max_det: int,
                 classes: Optional[Sequence[int]] = None, retina_masks: bool = False, agnostic: bool = False,
                 nms_impl: str = "opencv") -> None:
        self.layout = layout
        self.conf = float(conf)
        self.iou = float(iou)
        self.max_det = int(max_det)
        self.classes = None if classes is None else np.asarray(sorted(set(int(c) for c in classes)), np.int64)
        self.retina = retina_masks
        self.agnostic = agnostic
        self.nms_impl = nms_impl

    # -- candidates ----------------------------------------------------------------------------
    def _candidates(self, out: Dict[str, np.ndarray], input_hw: Tuple[int, int]):
        """(boxes xyxy input px, scores, class ids, coefficients) above the confidence threshold."""
        L = self.layout
        h, w = input_hw
        if L.kind == "nms":
            rows = out[L.pred][0]  # type: ignore[index]
            rows = rows[rows[:, 4] > self.conf]
            boxes = rows[:, :4].astype(np.float32, copy=True)
            if L.boxes_normalized is None and len(rows):
                L.boxes_normalized = bool(np.abs(boxes).max() <= 2.0)
            if L.boxes_normalized:
                boxes *= np.array([w, h, w, h], np.float32)
            return boxes, rows[:, 4].astype(np.float32), rows[:, 5].astype(np.int64), rows[:, 6: 6 + L.nm]

        if L.kind == "raw":
            p = out[L.pred][0]  # type: ignore[index]
            p = p.T if L.channels_last else p  # (C, N) view
            box_t, cls_t, coef_t = p[:4], p[4: 4 + L.nc], p[4 + L.nc: 4 + L.nc + L.nm]
        else:
            t = {r: (out[n][0].T if L.split_channels_last[r] else out[n][0]) for r, n in L.split.items()}
            box_t, cls_t = t["boxes"], t["scores"]
            coef_t = t.get("coefs", np.zeros((0, box_t.shape[1]), np.float32))
        best = cls_t.max(axis=0)
        idx = np.flatnonzero(best > self.conf)
        if L.boxes_normalized is None:
            L.boxes_normalized = bool(np.abs(box_t[:2]).max() <= 2.0)
        cls_sel = cls_t[:, idx]
        class_ids = cls_sel.argmax(axis=0).astype(np.int64)
        scores = best[idx]
        xywh = box_t[:, idx].T.astype(np.float32, copy=True)
        if L.boxes_normalized:
            xywh *= np.array([w, h, w, h], np.float32)
        boxes = np.empty_like(xywh)
        half = xywh[:, 2:] / 2
        boxes[:, :2] = xywh[:, :2] - half
        boxes[:, 2:] = xywh[:, :2] + half
        return boxes, scores.astype(np.float32, copy=False), class_ids, coef_t[:, idx].T

    def __call__(self, out: Dict[str, np.ndarray], lb: Letterbox) -> Detections:
        boxes, scores, class_ids, coefs = self._candidates(out, lb.input_shape)
        if self.classes is not None and len(boxes):
            sel = np.isin(class_ids, self.classes)
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
        masks = None
        if self.layout.protos is not None:
            protos = out[self.layout.protos][0]
            masks = process_masks(protos, self.layout.protos_nhwc, np.ascontiguousarray(coefs, np.float32),
                                  boxes, src_boxes, lb, self.retina)
        return Detections(src_boxes, scores, class_ids, masks)
