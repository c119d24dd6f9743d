"""Multi-object tracking metrics: IDF1 (Ristani et al., 2016) and CLEAR MOT (MOTA, identity switches).

Small and numpy-only, for tests and benchmarks of :mod:`edgeseg.live.tracking`; the numbers follow
the definitions used by ``motmetrics`` / TrackEval (IoU >= ``iou`` is a match, boxes xyxy).

Each frame is ``(gt_ids, gt_boxes, pred_ids, pred_boxes)``; predictions with id < 0 (detections
without a confirmed track) are not tracker output and are ignored.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Sequence, Tuple

import numpy as np

from ..live.tracking.assignment import hungarian, iou_matrix, linear_assignment

__all__ = ["mot_metrics"]

FrameData = Tuple[Sequence[int], np.ndarray, Sequence[int], np.ndarray]


def _frames(frames: Iterable[FrameData]) -> List[Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    out = []
    for g_ids, g_boxes, p_ids, p_boxes in frames:
        g_ids = np.asarray(g_ids, np.int64).reshape(-1)
        p_ids = np.asarray(p_ids, np.int64).reshape(-1)
        g_boxes = np.asarray(g_boxes, np.float64).reshape(-1, 4)
        p_boxes = np.asarray(p_boxes, np.float64).reshape(-1, 4)
        keep = p_ids >= 0
        out.append((g_ids, g_boxes, p_ids[keep], p_boxes[keep]))
    return out


def mot_metrics(frames: Iterable[FrameData], iou: float = 0.5) -> Dict[str, Any]:
    """IDF1, IDP, IDR, MOTA, identity switches, FP, FN, GT count, matched frames, tracks predicted."""
    data = _frames(frames)
    thresh = 1.0 - iou
    n_gt = sum(len(f[0]) for f in data)
    n_pred = sum(len(f[2]) for f in data)
    gt_ids = sorted({int(i) for f in data for i in f[0]})
    pr_ids = sorted({int(i) for f in data for i in f[2]})
    gi = {g: k for k, g in enumerate(gt_ids)}
    pi = {p: k for k, p in enumerate(pr_ids)}

    # IDF1: one global gt-id <-> pred-id assignment maximizing the frames where they overlap
    overlap = np.zeros((len(gt_ids), len(pr_ids)))
    # CLEAR MOT: per-frame matching that keeps last frame's pairs when they still overlap
    last: Dict[int, int] = {}  # gt id -> pred id it was last matched to
    current: Dict[int, int] = {}
    fp = fn = switches = matched = 0
    for g_ids, g_boxes, p_ids, p_boxes in data:
        ious = iou_matrix(g_boxes, p_boxes)
        for a, b in zip(*np.nonzero(ious >= iou)):
            overlap[gi[int(g_ids[a])], pi[int(p_ids[b])]] += 1
        pairs: List[Tuple[int, int]] = []
        used_g, used_p = set(), set()
        p_index = {int(p): k for k, p in enumerate(p_ids)}
        for a, g in enumerate(g_ids):
            p = current.get(int(g))
            if p is not None and p in p_index and p_index[p] not in used_p and ious[a, p_index[p]] >= iou:
                pairs.append((a, p_index[p]))
                used_g.add(a)
                used_p.add(p_index[p])
        rest_g = [a for a in range(len(g_ids)) if a not in used_g]
        rest_p = [b for b in range(len(p_ids)) if b not in used_p]
        if rest_g and rest_p:
            m, _, _ = linear_assignment(1.0 - ious[np.ix_(rest_g, rest_p)], thresh)
            pairs += [(rest_g[i], rest_p[j]) for i, j in m]
        current = {}
        for a, b in pairs:
            g, p = int(g_ids[a]), int(p_ids[b])
            if g in last and last[g] != p:
                switches += 1
            last[g] = p
            current[g] = p
        matched += len(pairs)
        fn += len(g_ids) - len(pairs)
        fp += len(p_ids) - len(pairs)

    idtp = 0.0
    if overlap.size:
        k = max(overlap.shape)
        square = np.zeros((k, k))
        square[: overlap.shape[0], : overlap.shape[1]] = overlap
        col = hungarian(-square)
        idtp = float(square[np.arange(k), col].sum())
    idfp, idfn = n_pred - idtp, n_gt - idtp
    return {
        "idf1": 2 * idtp / (2 * idtp + idfp + idfn) if (n_gt + n_pred) else 1.0,
        "idp": idtp / n_pred if n_pred else 0.0,
        "idr": idtp / n_gt if n_gt else 0.0,
        "mota": 1.0 - (fn + fp + switches) / n_gt if n_gt else 0.0,
        "id_switches": switches,
        "fp": fp,
        "fn": fn,
        "gt": n_gt,
        "matched": matched,
        "gt_tracks": len(gt_ids),
        "pred_tracks": len(pr_ids),
    }
