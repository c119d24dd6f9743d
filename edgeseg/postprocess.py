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


def nms_opencv(boxes: np.ndarray, scores: np.ndarray, iou: float, max_det: int) -> np.ndarray:
    """The same NMS through ``cv2.dnn.NMSBoxes`` (C++); boxes already carry class offsets."""
    import cv2

    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    xywh = boxes.astype(np.float64, copy=True)
    xywh[:, 2:] -= xywh[:, :2]
    keep = cv2.dnn.NMSBoxes(xywh.tolist(), scores.astype(np.float64).tolist(), -1.0, float(iou), top_k=int(max_det))
    return np.asarray(keep, dtype=np.int64).reshape(-1)[:max_det]


def nms(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou: float, max_det: int,
        agnostic: bool = False, impl: str = "numpy") -> np.ndarray:
    """Class-aware NMS (boxes of different classes never suppress each other)."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    b = boxes if agnostic else boxes + (class_ids.astype(np.float32) * MAX_WH)[:, None]
    return (nms_opencv if impl == "opencv" else nms_numpy)(b, scores, iou, max_det)


class Decoder:
    """Turns dequantized float32 outputs (by name) into :class:`Detections` in source pixels."""

    def __init__(self, layout: OutputLayout, conf: float, iou: float, max_det: int,
                 classes: Optional[Sequence[int]] = None, retina_masks: bool = False, agnostic: bool = False,
                 nms_impl: str = "numpy") -> None:
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


def process_masks(protos: np.ndarray, nhwc: bool, coefs: np.ndarray, input_boxes: np.ndarray,
                  src_boxes: np.ndarray, lb: Letterbox, retina: bool = False) -> Masks:
    """Masks of K detections at source resolution, computed inside each box only.

    ``protos``: (nm, mh, mw) or NHWC (mh, mw, nm) float32; ``coefs``: (K, nm);
    ``input_boxes``: (K, 4) xyxy in model-input pixels (unclipped, as the head predicts them);
    ``src_boxes``: the same boxes in source pixels.

    Default, as Ultralytics' ``process_mask`` then ``scale_masks``: logits (coefs @ protos) are
    upsampled bilinearly (align_corners=False) to input resolution, cropped to the input box and
    thresholded at 0 (sigmoid 0.5); that binary mask is resampled bilinearly to source resolution
    and thresholded at 0.5. ``retina`` (Ultralytics' ``process_mask_native``): logits are resampled
    straight to source resolution and cropped to the source box. Every step touches only the
    pixels of the box (plus the one-pixel support of bilinear sampling), never a full frame.
    """
    H, W = lb.orig_shape
    ih, iw = lb.input_shape
    mh, mw = (protos.shape[0], protos.shape[1]) if nhwc else (protos.shape[1], protos.shape[2])
    empty = (np.zeros((0, 0), bool), (0, 0))
    crops, offsets = [], []
    if retina:
        frame = _unletterbox_map((mh, mw), (H, W))
        for k in range(len(coefs)):
            region = _box_pixels(src_boxes[k], (H, W))
            if region is None:
                crops.append(empty[0]); offsets.append(empty[1])
                continue
            up = _resample(lambda win: _logits(protos, nhwc, coefs[k], *win), frame, region)
            crops.append(up > 0)
            offsets.append((region[0], region[2]))
        return Masks(crops, np.array(offsets, np.int32).reshape(-1, 2), (H, W))

    to_input = ((mw / iw, 0.5 * mw / iw - 0.5, 0, mw - 1), (mh / ih, 0.5 * mh / ih - 0.5, 0, mh - 1))  # input px -> proto px
    frame = _unletterbox_map((ih, iw), (H, W))  # source px -> input px (scale_masks)
    for k in range(len(coefs)):
        # input pixels inside the box, limited to the un-padded image area that scale_masks keeps
        region = _box_pixels(input_boxes[k], (ih, iw), limits=(frame[0][2], frame[0][3], frame[1][2], frame[1][3]))
        if region is None:
            crops.append(empty[0]); offsets.append(empty[1])
            continue
        binary = (_resample(lambda win: _logits(protos, nhwc, coefs[k], *win), to_input, region) > 0).astype(np.float32)
        x0, x1, y0, y1 = region
        # source pixels whose bilinear sample can reach the binary region (one input pixel of support)
        (ax, bx, lx, rx), (ay, by, ly, ry) = frame
        sx0 = max(int(np.floor((x0 - 1 - bx) / ax)), 0)
        sx1 = min(int(np.ceil((x1 + 1 - bx) / ax)), W - 1)
        sy0 = max(int(np.floor((y0 - 1 - by) / ay)), 0)
        sy1 = min(int(np.ceil((y1 + 1 - by) / ay)), H - 1)
        if sx1 < sx0 or sy1 < sy0:
            crops.append(empty[0]); offsets.append(empty[1])
            continue
        # zero margin where the binary mask continues with zeros; at the kept frame's edge the
        # bilinear sampling clamps instead (F.interpolate semantics): replicate there
        pad = (int(x0 > lx), int(x1 < rx), int(y0 > ly), int(y1 < ry))
        binary = cv2_pad(binary, pad)
        M = np.array([[ax, 0.0, ax * sx0 + bx - (x0 - pad[0])], [0.0, ay, ay * sy0 + by - (y0 - pad[2])]])
        up = _warp(binary, M, (sx1 - sx0 + 1, sy1 - sy0 + 1))
        crops.append(up > 0.5)
        offsets.append((sx0, sy0))
    return Masks(crops, np.array(offsets, np.int32).reshape(-1, 2), (H, W))


def _unletterbox_map(frame_hw: Tuple[int, int], orig_hw: Tuple[int, int]):
    """Ultralytics' ``scale_masks`` as an affine map: source pixel x -> frame pixel ``a * x + b``
    per axis, with the kept frame columns/rows [lo, hi] (the letterbox padding cut, then resized)."""
    fh, fw = frame_hw
    H, W = orig_hw
    gain = min(fh / H, fw / W)
    padw, padh = (fw - W * gain) / 2, (fh - H * gain) / 2
    top, left = int(round(padh - 0.1)), int(round(padw - 0.1))
    bottom, right = fh - int(round(padh + 0.1)), fw - int(round(padw + 0.1))
    ax, ay = (right - left) / W, (bottom - top) / H
    return ((ax, 0.5 * ax + left - 0.5, left, right - 1), (ay, 0.5 * ay + top - 0.5, top, bottom - 1))


def _box_pixels(box: np.ndarray, hw: Tuple[int, int], limits: Optional[Tuple[int, int, int, int]] = None):
    """Inclusive pixel ranges (x0, x1, y0, y1) with x1_box > x >= x0_box (crop_mask's rule), or None."""
    lx, rx, ly, ry = limits if limits is not None else (0, hw[1] - 1, 0, hw[0] - 1)
    x0, x1 = max(int(np.ceil(box[0])), lx), min(int(np.ceil(box[2])) - 1, rx)
    y0, y1 = max(int(np.ceil(box[1])), ly), min(int(np.ceil(box[3])) - 1, ry)
    if x1 < x0 or y1 < y0:
        return None
    return x0, x1, y0, y1


def _resample(values, frame, region) -> np.ndarray:
    """Bilinear samples (align_corners=False, clamped at the frame's kept edges) of a map over
    ``region`` (x0, x1, y0, y1) of the destination; ``values(window)`` computes the map over an
    inclusive source window (x0, x1, y0, y1); ``frame`` maps destination px -> source px."""
    (ax, bx, lx, rx), (ay, by, ly, ry) = frame
    x0, x1, y0, y1 = region
    wx0 = min(max(int(np.floor(ax * x0 + bx)), lx), rx)
    wx1 = min(max(int(np.ceil(ax * x1 + bx)), lx), rx)
    wy0 = min(max(int(np.floor(ay * y0 + by)), ly), ry)
    wy1 = min(max(int(np.ceil(ay * y1 + by)), ly), ry)
    win = values((wx0, wx1, wy0, wy1))
    M = np.array([[ax, 0.0, ax * x0 + bx - wx0], [0.0, ay, ay * y0 + by - wy0]])
    return _warp(win, M, (x1 - x0 + 1, y1 - y0 + 1))


def _warp(src: np.ndarray, M: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """dst(x, y) = bilinear src(M @ (x, y, 1)), edge pixels replicated outside ``src``."""
    import cv2

    return cv2.warpAffine(src, M, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)


def cv2_pad(a: np.ndarray, pad: Tuple[int, int, int, int]) -> np.ndarray:
    """Zero-pad a 2-D array by (left, right, top, bottom)."""
    left, right, top, bottom = pad
    if not any(pad):
        return a
    out = np.zeros((a.shape[0] + top + bottom, a.shape[1] + left + right), a.dtype)
    out[top: top + a.shape[0], left: left + a.shape[1]] = a
    return out


def _logits(protos: np.ndarray, nhwc: bool, coef: np.ndarray, x0: int, x1: int, y0: int, y1: int) -> np.ndarray:
    """coef @ protos over the inclusive proto window [y0..y1] x [x0..x1] -> (h, w) float32."""
    if nhwc:
        win = protos[y0: y1 + 1, x0: x1 + 1, :]
        return win @ coef
    win = protos[:, y0: y1 + 1, x0: x1 + 1]
    nm, h, w = win.shape
    return (coef @ win.reshape(nm, h * w)).reshape(h, w)
