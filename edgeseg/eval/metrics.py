"""COCO-standard average precision for boxes and masks, in numpy.

The numbers equal pycocotools' ``COCOeval`` (all 12 numbers of ``summarize()``: AP, AP50, AP75,
AP small/medium/large, AR@1/10/100, AR small/medium/large) on the same predictions and ground truth:

- IoU thresholds 0.50:0.05:0.95; 101-point interpolated precision; AP averaged over the classes
  that have ground truth; per image and class the 100 highest-scoring detections are kept;
- area ranges small (< 32²), medium, large (> 96²) by the ground truth's ``area`` (COCO's field, or
  the mask's pixel count for YOLO labels) and the detection's box area;
- greedy matching in score order, each detection to the unmatched ground truth with the highest
  IoU (ties: the later one), regular objects before ignored ones; crowd regions (``iscrowd``)
  are ignored, may absorb any number of detections, and use intersection / detection area;
- box IoU with COCO's ``[x, y, w, h]`` arithmetic; mask IoU exact on bitmaps at source resolution,
  computed from per-box crops only where crops overlap (no N x H x W frames).

Beyond COCO: precision and recall at the confidence that maximizes the class-mean F1 (IoU 0.5),
as YOLO tools report them, and per-class tables.

Use :class:`COCOEvaluator`: ``update()`` once per image (results are matched at once and only
scores and match flags are kept), then ``compute()``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "IOU_THRESHOLDS", "RECALL_THRESHOLDS", "AREA_RANGES", "STAT_NAMES", "APMetrics", "COCOEvaluator",
    "box_iou_xywh", "mask_iou_crops", "match_detections",
]

#: COCO's IoU thresholds 0.50:0.05:0.95 (the same float values as pycocotools)
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
#: COCO's 101 recall points 0:0.01:1
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
#: COCO's area range "all"
AREA_ALL = (0.0, 1e5 ** 2)

CropMask = Tuple[np.ndarray, int, int]


# -- IoU ------------------------------------------------------------------------------------------

def box_iou_xywh(dt: np.ndarray, gt: np.ndarray, iscrowd: Optional[np.ndarray] = None) -> np.ndarray:
    """IoU of (D, 4) and (G, 4) ``[x, y, w, h]`` float64 boxes -> (D, G), with COCO's arithmetic;
    for crowd ground truth the denominator is the detection's area."""
    dt = np.asarray(dt, np.float64).reshape(-1, 4)
    gt = np.asarray(gt, np.float64).reshape(-1, 4)
    if len(dt) == 0 or len(gt) == 0:
        return np.zeros((len(dt), len(gt)))
    dx, dy, dw, dh = (dt[:, i, None] for i in range(4))
    gx, gy, gw, gh = (gt[None, :, i] for i in range(4))
    w = np.minimum(dw + dx, gw + gx) - np.maximum(dx, gx)
    h = np.minimum(dh + dy, gh + gy) - np.maximum(dy, gy)
    inter = w * h
    da, ga = dw * dh, gw * gh
    union = da + ga - inter
    if iscrowd is not None and np.any(iscrowd):
        union = np.where(np.asarray(iscrowd, bool)[None, :], np.broadcast_to(da, union.shape), union)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
    return np.where((w > 0) & (h > 0), iou, 0.0)


def _rects(masks: Sequence[CropMask]) -> np.ndarray:
    """(N, 4) int64 ``x0, y0, x1, y1`` (exclusive) of crop masks."""
    out = np.zeros((len(masks), 4), np.int64)
    for i, (c, x0, y0) in enumerate(masks):
        out[i] = (x0, y0, x0 + c.shape[1], y0 + c.shape[0])
    return out


def mask_iou_crops(dt: Sequence[CropMask], gt: Sequence[CropMask], iscrowd: Optional[np.ndarray] = None,
                   dt_areas: Optional[np.ndarray] = None, gt_areas: Optional[np.ndarray] = None,
                   min_iou: float = 0.0) -> np.ndarray:
    """Exact mask IoU (D, G) of crop masks ``(bool crop, x0, y0)`` in one image's pixel frame.

    Only pairs whose crops overlap are intersected. With ``min_iou`` > 0, pairs whose IoU
    provably stays below it (from areas and crop overlap alone) are reported as 0 without
    being intersected: matching at thresholds >= ``min_iou`` is unchanged.
    ``*_areas``: pixel counts, computed when omitted (only for the masks that need them).
    """
    D, G = len(dt), len(gt)
    out = np.zeros((D, G))
    if D == 0 or G == 0:
        return out
    crowd = np.zeros(G, bool) if iscrowd is None else np.asarray(iscrowd, bool)
    rd, rg = _rects(dt), _rects(gt)
    ow = np.minimum(rd[:, None, 2], rg[None, :, 2]) - np.maximum(rd[:, None, 0], rg[None, :, 0])
    oh = np.minimum(rd[:, None, 3], rg[None, :, 3]) - np.maximum(rd[:, None, 1], rg[None, :, 1])
    overlap = np.where((ow > 0) & (oh > 0), ow * oh, 0)
    pairs = np.argwhere(overlap > 0)
    if len(pairs) == 0:
        return out
    ga = np.asarray(gt_areas, np.int64) if gt_areas is not None else np.array([np.count_nonzero(m[0]) for m in gt], np.int64)
    da = np.full(D, -1, np.int64) if dt_areas is None else np.asarray(dt_areas, np.int64).copy()
    for d in np.unique(pairs[:, 0]):
        if da[d] < 0:
            da[d] = np.count_nonzero(dt[d][0])
    a_d, a_g = da[pairs[:, 0]], ga[pairs[:, 1]]
    c = crowd[pairs[:, 1]]
    i_max = np.minimum(np.minimum(a_d, a_g), overlap[pairs[:, 0], pairs[:, 1]])
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = np.where(c, i_max / a_d, i_max / (a_d + a_g - i_max))
    bound = np.nan_to_num(bound, nan=0.0)
    for (d, g), ub, is_crowd in zip(pairs, bound, c):
        if ub <= 0 or (min_iou > 0 and ub < min_iou):
            continue
        cd, dx0, dy0 = dt[d]
        cg, gx0, gy0 = gt[g]
        x0, y0 = max(rd[d, 0], rg[g, 0]), max(rd[d, 1], rg[g, 1])
        x1, y1 = min(rd[d, 2], rg[g, 2]), min(rd[d, 3], rg[g, 3])
        inter = np.count_nonzero(cd[y0 - dy0: y1 - dy0, x0 - dx0: x1 - dx0] & cg[y0 - gy0: y1 - gy0, x0 - gx0: x1 - gx0])
        if inter == 0:
            continue
        union = da[d] if is_crowd else da[d] + ga[g] - inter
        out[d, g] = float(inter) / float(union)
    return out


# -- matching -------------------------------------------------------------------------------------

def match_detections(ious: np.ndarray, gt_ignore: np.ndarray, iscrowd: np.ndarray,
                     thresholds: np.ndarray = IOU_THRESHOLDS) -> Tuple[np.ndarray, np.ndarray]:
    """COCO's greedy matching of one image and class, for all thresholds at once.

    ``ious``: (D, G), detections sorted by descending score, ground truth sorted with ignored
    ones last. Returns ``matched`` (T, D) bool and ``ignored`` (T, D) bool (matched to an
    ignored ground truth).
    """
    D, G = ious.shape
    T = len(thresholds)
    matched = np.zeros((T, D), bool)
    ignored = np.zeros((T, D), bool)
    if D == 0 or G == 0:
        return matched, ignored
    thr = np.minimum(np.asarray(thresholds, np.float64), 1 - 1e-10)
    gt_ignore = np.asarray(gt_ignore, bool)
    crowd = np.asarray(iscrowd, bool)
    n_reg = int(np.count_nonzero(~gt_ignore))
    if G == 1:  # the common case, without a loop: the first detection reaching t takes the object
        reach = ious[:, 0][None, :] >= thr[:, None]  # (T, D)
        if crowd[0]:  # a crowd region absorbs every detection that reaches it
            return reach.copy(), reach & bool(gt_ignore[0])
        first = np.argmax(reach, axis=1)
        rows = np.flatnonzero(reach[np.arange(T), first])
        matched[rows, first[rows]] = True
        ignored[rows, first[rows]] = bool(gt_ignore[0])
        return matched, ignored
    taken = np.zeros((T, G), bool)
    blocks = [b for b in ((0, n_reg), (n_reg, G)) if b[1] > b[0]]
    for d in np.flatnonzero(ious.max(axis=1) >= thr.min()):
        row = ious[d]
        eligible = (row[None, :] >= thr[:, None]) & ~(taken & ~crowd[None, :])
        m = np.full(T, -1)
        for lo, hi in blocks:  # the best regular match wins; ignored ones only when there is none
            vals = np.where(eligible[:, lo:hi], row[None, lo:hi], -1.0)
            best = vals.max(axis=1)
            last = (hi - lo - 1) - np.argmax((vals == best[:, None])[:, ::-1], axis=1)
            m = np.where((m < 0) & (best >= 0), lo + last, m)
        ok = np.flatnonzero(m >= 0)
        matched[ok, d] = True
        ignored[ok, d] = gt_ignore[m[ok]]
        taken[ok, m[ok]] = True
    return matched, ignored


# -- results --------------------------------------------------------------------------------------

#: COCO's area ranges (pixels); the ground truth's ``area`` decides, detections by their own area
AREA_RANGES: Dict[str, Tuple[float, float]] = {
    "all": AREA_ALL, "small": (0.0, 32.0 ** 2), "medium": (32.0 ** 2, 96.0 ** 2), "large": (96.0 ** 2, 1e5 ** 2),
}
#: COCO's detection budgets for average recall
MAX_DETS = (1, 10, 100)
STAT_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
              "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")


@dataclass
class APMetrics:
    """Box or mask metrics over a dataset.

    - ``map``: AP@[.50:.95] (COCO "AP"); ``map50``, ``map75``: AP at IoU 0.50 and 0.75
    - ``maps``, ``ap50s``: (nc,) float64 per-class AP@[.50:.95] / AP50, NaN for classes without
      ground truth (they are not part of the means)
    - ``stats``: COCO's 12 summary numbers in ``COCOeval.summarize()`` order (see
      :data:`STAT_NAMES`: AP, AP50, AP75, AP small/medium/large, AR@1/10/100, AR small/medium/large;
      -1 where nothing falls in a range, as pycocotools prints)
    - ``mar100``: COCO AR@100; ``mp``, ``mr``, ``f1``, ``conf``: mean precision and recall over
      classes at the confidence maximizing the class-mean F1 (IoU 0.5), and that confidence
    - ``p``, ``r``: (nc,) per-class precision and recall at that confidence
    - ``precision``: (T, 101, nc) interpolated precision (area "all"), -1 where a class has no ground truth
    """

    map: float
    map50: float
    map75: float
    maps: np.ndarray
    ap50s: np.ndarray
    mar100: float = float("nan")
    stats: np.ndarray = field(default_factory=lambda: np.full(12, -1.0))
    mp: float = float("nan")
    mr: float = float("nan")
    f1: float = float("nan")
    conf: float = float("nan")
    p: np.ndarray = field(default_factory=lambda: np.zeros(0))
    r: np.ndarray = field(default_factory=lambda: np.zeros(0))
    precision: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0)), repr=False)

    def as_dict(self) -> Dict[str, float]:
        out = {"mAP50-95": self.map, "mAP50": self.map50, "mAP75": self.map75}
        out.update({k: float(v) for k, v in zip(STAT_NAMES[3:], self.stats[3:])})
        out.update({"P": self.mp, "R": self.mr, "F1": self.f1, "conf": self.conf})
        return out


@dataclass
class _ClassLog:
    """One class and area range: (image_id, scores (D,), matched (T, D), ignored (T, D)) per
    image, detections in score order, and the number of ground truths not ignored."""

    entries: List[Tuple[Any, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    n_gt: int = 0


class COCOEvaluator:
    """Accumulates COCO AP for boxes (``"bbox"``) and masks (``"segm"``), one image at a time.

    ``nc``: number of classes (class indices 0..nc-1; detections of other classes are ignored,
    as COCO ignores categories missing from the ground truth). ``max_dets``: per image and class.
    """

    def __init__(self, nc: int, iou_types: Sequence[str] = ("bbox", "segm"), max_dets: int = 100,
                 iou_thresholds: np.ndarray = IOU_THRESHOLDS) -> None:
        self.nc = int(nc)
        self.iou_types = tuple(iou_types)
        self.max_dets = int(max_dets)
        self.thresholds = np.asarray(iou_thresholds, np.float64)
        self.logs: Dict[str, Dict[str, List[_ClassLog]]] = {
            t: {a: [_ClassLog() for _ in range(self.nc)] for a in AREA_RANGES} for t in self.iou_types}
        self.images = 0
        self.images_per_class = np.zeros(self.nc, np.int64)
        self.instances_per_class = np.zeros(self.nc, np.int64)

    def update(self, image_id: Any, gt_class_ids: np.ndarray, gt_boxes: np.ndarray, gt_iscrowd: np.ndarray,
               gt_areas: np.ndarray, dt_boxes: np.ndarray, dt_scores: np.ndarray, dt_class_ids: np.ndarray,
               gt_masks: Optional[Sequence[CropMask]] = None, dt_masks: Optional[Sequence[CropMask]] = None,
               dt_areas: Optional[np.ndarray] = None) -> None:
        """Add one image.

        Ground truth: ``gt_class_ids`` (G,), ``gt_boxes`` (G, 4) ``[x, y, w, h]``, ``gt_iscrowd``
        (G,), ``gt_areas`` (G,) (COCO's area, for the area ranges), ``gt_masks`` G crop masks.
        Detections in result order: ``dt_boxes`` (D, 4) ``[x, y, w, h]`` float64, ``dt_scores``
        (D,), ``dt_class_ids`` (D,), ``dt_masks`` D crop masks (needed for ``"segm"``),
        ``dt_areas`` (D,) for the area ranges (default: box area ``w * h``, as pycocotools sets
        it for results that carry a ``bbox``).
        """
        self.images += 1
        gcls = np.asarray(gt_class_ids, np.int64).reshape(-1)
        dcls = np.asarray(dt_class_ids, np.int64).reshape(-1)
        scores = np.asarray(dt_scores, np.float64).reshape(-1)
        gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
        dt_boxes = np.asarray(dt_boxes, np.float64).reshape(-1, 4)
        crowd = np.asarray(gt_iscrowd, bool).reshape(-1)
        areas = np.asarray(gt_areas, np.float64).reshape(-1)
        d_area = dt_boxes[:, 2] * dt_boxes[:, 3] if dt_areas is None else np.asarray(dt_areas, np.float64).reshape(-1)
        present = np.unique(gcls[(gcls >= 0) & (gcls < self.nc)])
        self.images_per_class[present] += 1
        np.add.at(self.instances_per_class, gcls[(gcls >= 0) & (gcls < self.nc) & ~crowd], 1)
        for c in np.union1d(present, np.unique(dcls[(dcls >= 0) & (dcls < self.nc)])):
            gi = np.flatnonzero(gcls == c)
            di = np.flatnonzero(dcls == c)
            di = di[np.argsort(-scores[di], kind="mergesort")][: self.max_dets]
            for t in self.iou_types:
                if t == "bbox":
                    ious = box_iou_xywh(dt_boxes[di], gt_boxes[gi], crowd[gi])
                else:
                    if gt_masks is None or dt_masks is None:
                        raise ValueError("mask IoU needs gt_masks and dt_masks")
                    ious = mask_iou_crops([dt_masks[i] for i in di], [gt_masks[i] for i in gi], crowd[gi],
                                          min_iou=float(self.thresholds.min()))
                done: Dict[bytes, Tuple[np.ndarray, np.ndarray]] = {}
                for a, (lo, hi) in AREA_RANGES.items():
                    ig = crowd[gi] | (areas[gi] < lo) | (areas[gi] > hi)
                    key = ig.tobytes()
                    if key not in done:  # matching depends on the range only through the ignore flags
                        order = np.argsort(ig, kind="mergesort")  # ignored ground truth last
                        done[key] = match_detections(ious[:, order], ig[order], crowd[gi][order], self.thresholds)
                    matched, ignored = done[key]
                    out_of_range = (d_area[di] < lo) | (d_area[di] > hi)
                    if out_of_range.any():  # unmatched detections outside the range do not count
                        ignored = ignored | (~matched & out_of_range[None, :])
                    log = self.logs[t][a][c]
                    log.entries.append((image_id, scores[di], matched, ignored))
                    log.n_gt += int(np.count_nonzero(~ig))

    def compute(self) -> Dict[str, APMetrics]:
        """The metrics of every IoU type, as pycocotools' ``accumulate()`` + ``summarize()``."""
        return {t: self._compute(self.logs[t]) for t in self.iou_types}

    def _accumulate(self, logs: List[_ClassLog]) -> Tuple[np.ndarray, np.ndarray, Dict[int, Tuple[np.ndarray, ...]]]:
        """Precision (T, R, K), recall (T, K, len(MAX_DETS)) and raw IoU-0.5 curves of one area range."""
        T, R, K = len(self.thresholds), len(RECALL_THRESHOLDS), self.nc
        precision = -np.ones((T, R, K))
        recall = -np.ones((T, K, len(MAX_DETS)))
        curves: Dict[int, Tuple[np.ndarray, ...]] = {}
        for k, log in enumerate(logs):
            if log.n_gt == 0:
                continue
            entries = sorted(log.entries, key=lambda e: e[0])  # image order, as COCO's sorted imgIds
            if entries:
                scores = np.concatenate([e[1] for e in entries])
                matched = np.concatenate([e[2] for e in entries], axis=1)
                ignored = np.concatenate([e[3] for e in entries], axis=1)
                rank = np.concatenate([np.arange(len(e[1])) for e in entries])  # place within its image
            else:
                scores, matched, ignored = np.zeros(0), np.zeros((T, 0), bool), np.zeros((T, 0), bool)
                rank = np.zeros(0, np.int64)
            true_pos = matched & ~ignored
            for mi, md in enumerate(MAX_DETS):  # recall with the best md detections per image
                recall[:, k, mi] = np.count_nonzero(true_pos & (rank < md)[None, :], axis=1) / log.n_gt
            order = np.argsort(-scores, kind="mergesort")
            matched, ignored = matched[:, order], ignored[:, order]
            tp = np.cumsum(matched & ~ignored, axis=1).astype(float)
            fp = np.cumsum(~matched & ~ignored, axis=1).astype(float)
            nd = tp.shape[1]
            rc = tp / log.n_gt
            pr = tp / (fp + tp + np.spacing(1))
            precision[:, :, k] = 0.0
            if nd:
                pr_env = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
                for t in range(T):
                    inds = np.searchsorted(rc[t], RECALL_THRESHOLDS, side="left")
                    valid = inds < nd
                    precision[t, valid, k] = pr_env[t, inds[valid]]
            # raw (not interpolated) curve at IoU 0.5 against confidence, for P/R at best F1
            keep = ~ignored[0]
            tp0, fp0 = np.cumsum(matched[0][keep]), np.cumsum(~matched[0][keep])
            curves[k] = (scores[order][keep], tp0 / log.n_gt, tp0 / np.maximum(tp0 + fp0, 1))
        return precision, recall, curves

    def _compute(self, logs: Dict[str, List[_ClassLog]]) -> APMetrics:
        def mean(a: np.ndarray) -> float:
            v = a[a > -1]
            return float(np.mean(v)) if v.size else -1.0

        acc = {a: self._accumulate(logs[a]) for a in AREA_RANGES}
        precision, recall, curves = acc["all"]
        K = self.nc
        i50 = int(np.argmin(np.abs(self.thresholds - 0.5)))
        i75 = int(np.argmin(np.abs(self.thresholds - 0.75)))
        stats = np.array([
            mean(precision), mean(precision[i50]), mean(precision[i75]),
            mean(acc["small"][0]), mean(acc["medium"][0]), mean(acc["large"][0]),
            mean(recall[:, :, 0]), mean(recall[:, :, 1]), mean(recall[:, :, 2]),
            mean(acc["small"][1][:, :, 2]), mean(acc["medium"][1][:, :, 2]), mean(acc["large"][1][:, :, 2]),
        ])
        has = (precision > -1).any(axis=(0, 1))
        maps = np.full(K, np.nan)
        ap50s = np.full(K, np.nan)
        maps[has] = precision[:, :, has].mean(axis=(0, 1))
        ap50s[has] = precision[i50, :, has].mean(axis=-1)
        nan = lambda v: float("nan") if v == -1.0 else float(v)  # noqa: E731  (no ground truth at all)
        out = APMetrics(map=nan(stats[0]), map50=nan(stats[1]), map75=nan(stats[2]), maps=maps, ap50s=ap50s,
                        mar100=nan(stats[8]), stats=stats, precision=precision)
        if curves:
            px = np.linspace(0, 1, 1000)
            p_c = np.zeros((K, len(px)))
            r_c = np.zeros((K, len(px)))
            for k, (conf, r, p) in curves.items():
                if len(conf):
                    r_c[k] = np.interp(-px, -conf, r, left=0)
                    p_c[k] = np.interp(-px, -conf, p, left=1)
            ks = np.array(sorted(curves))
            f1 = 2 * p_c[ks] * r_c[ks] / (p_c[ks] + r_c[ks] + 1e-16)
            i = int(np.argmax(f1.mean(axis=0)))
            out.mp, out.mr = float(p_c[ks, i].mean()), float(r_c[ks, i].mean())
            out.f1, out.conf = float(f1[:, i].mean()), float(px[i])
            out.p = np.where(has, p_c[:, i], np.nan)
            out.r = np.where(has, r_c[:, i], np.nan)
        return out
