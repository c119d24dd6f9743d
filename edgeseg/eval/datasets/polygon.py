"""Polygon rasterization that matches the COCO toolbox bit for bit.

COCO's evaluation rasterizes ground-truth polygons with its own algorithm (``rleFrPoly`` in the
COCO API's ``maskApi.c``): the polygon is scaled by 5, its edges are walked point by point, the
points where the walk changes column are snapped back to pixel rows, and the mask is the parity
of those boundary points along the column-major pixel order. It differs from ``cv2.fillPoly`` on
edge pixels, so metrics computed with fillPoly drift from pycocotools' numbers. This module is a
numpy re-implementation of that algorithm (written from its published description and checked
against pycocotools in the tests), returning the mask as a crop plus its offset, so a mask never
costs a full H x W frame.

Coordinates are source-image pixels (x right, y down, float64); masks are bool (h, w) crops
whose top-left pixel is at ``(x0, y0)``.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

__all__ = ["CropMask", "polygon_mask", "polygon_masks", "polygons_mask", "union_masks", "box_polygon"]

#: A mask as (bool crop (h, w), x0, y0): the crop's top-left pixel in the source image.
CropMask = Tuple[np.ndarray, int, int]

_SCALE = 5.0


def _c_int(x: np.ndarray) -> np.ndarray:
    """C's ``(int)`` cast of doubles: truncation toward zero."""
    return np.trunc(x).astype(np.int64)


def _boundary_positions(xy: np.ndarray, pid: np.ndarray, h: int, w: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column (x), row (y) and polygon id of the boundary points of polygons, as COCO computes them.

    ``xy``: (N, 2) float64 pixel coordinates of all polygons' vertices, ``pid``: (N,) polygon id of
    each vertex (polygons contiguous, in order). A point (x, y) toggles the mask at column-major
    position ``x * h + y`` (y may equal h: the top of the next column).
    """
    x = _c_int(_SCALE * xy[:, 0] + 0.5)
    y = _c_int(_SCALE * xy[:, 1] + 0.5)
    n = len(xy)
    nxt = np.arange(1, n + 1)
    last = np.flatnonzero(np.append(pid[1:] != pid[:-1], True))
    first = np.concatenate(([0], last[:-1] + 1))
    nxt[last] = first  # each polygon closes on its first vertex
    xs, xe = x, x[nxt]
    ys, ye = y, y[nxt]
    dx, dy = np.abs(xe - xs), np.abs(ys - ye)
    by_x = dx >= dy
    flip = (by_x & (xs > xe)) | (~by_x & (ys > ye))
    xs, xe = np.where(flip, xe, xs), np.where(flip, xs, xe)
    ys, ye = np.where(flip, ye, ys), np.where(flip, ys, ye)
    length = np.where(by_x, dx, dy)  # each edge yields length + 1 points
    safe = np.maximum(length, 1)
    slope = np.where(by_x, (ye - ys) / safe, (xe - xs) / safe).astype(np.float64)
    slope[length == 0] = 0.0  # C divides 0/0 here; the point's row is never used (see module doc)

    cnt = length + 1
    edge = np.repeat(np.arange(n), cnt)
    d = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    t = np.where(flip[edge], length[edge] - d, d)
    bx = by_x[edge]
    s_t = slope[edge] * t
    u = np.where(bx, t + xs[edge], _c_int(xs[edge] + s_t + 0.5))
    v = np.where(bx, _c_int(ys[edge] + s_t + 0.5), t + ys[edge])
    ppid = pid[edge]

    # points where the walk changes column (within one polygon), snapped back to pixel centres
    change = np.flatnonzero((u[1:] != u[:-1]) & (ppid[1:] == ppid[:-1])) + 1
    uj, up = u[change], u[change - 1]
    xd = (np.where(uj < up, uj, uj - 1).astype(np.float64) + 0.5) / _SCALE - 0.5
    keep = (np.floor(xd) == xd) & (xd >= 0) & (xd <= w - 1)
    yd = (np.minimum(v[change], v[change - 1]).astype(np.float64) + 0.5) / _SCALE - 0.5
    yd = np.ceil(np.clip(yd, 0, h))
    return xd[keep].astype(np.int64), yd[keep].astype(np.int64), ppid[change][keep]


def polygon_masks(polygons: Sequence[np.ndarray], h: int, w: int) -> List[CropMask]:
    """Rasterize many polygons at once (one image), each exactly as pycocotools does.

    ``polygons``: (K_i, 2) pixel coordinates, K_i >= 3 (fewer give an empty mask). Returns one
    tight ``(crop, x0, y0)`` per polygon (an empty (0, 0) crop when it covers no pixel centre).
    """
    empty: CropMask = (np.zeros((0, 0), bool), 0, 0)
    out: List[CropMask] = [empty] * len(polygons)
    arrs = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in polygons]
    idx = [i for i, a in enumerate(arrs) if len(a)]
    if not idx:
        return out
    xy = np.concatenate([arrs[i] for i in idx])
    pid = np.repeat(np.arange(len(idx)), [len(arrs[i]) for i in idx])
    px, py, ppid = _boundary_positions(xy, pid, h, w)
    if len(px) == 0:
        return out
    npoly = len(idx)
    has = np.bincount(ppid, minlength=npoly) > 0
    c0 = np.full(npoly, np.iinfo(np.int64).max)
    c1 = np.full(npoly, -1)
    np.minimum.at(c0, ppid, px)
    np.maximum.at(c1, ppid, px)
    ncols = np.where(has, c1 - c0 + 1, 0)
    size = ncols * h
    seg = np.concatenate(([0], np.cumsum(size + 1)))  # one spare slot per polygon: a point at its last column's bottom
    pos = seg[ppid] + (px - np.where(has, c0, 0)[ppid]) * h + py
    parity = np.cumsum(np.bincount(pos, minlength=int(seg[-1])))
    for k in np.flatnonzero(has):
        a, b = int(seg[k]), int(seg[k] + size[k])
        before = parity[a - 1] if a else 0
        col_major = ((parity[a:b] - before) & 1).astype(bool).reshape(int(ncols[k]), h)
        cols = np.flatnonzero(col_major.any(axis=1))
        if len(cols) == 0:
            continue
        rows = np.flatnonzero(col_major[cols[0]: cols[-1] + 1].any(axis=0))
        crop = col_major[cols[0]: cols[-1] + 1, rows[0]: rows[-1] + 1].T.copy()
        out[idx[k]] = (crop, int(c0[k]) + int(cols[0]), int(rows[0]))
    return out


def polygon_mask(xy: np.ndarray, h: int, w: int) -> CropMask:
    """Rasterize one polygon exactly as pycocotools' ``frPyObjects`` does.

    ``xy``: (K, 2) or flat (2K,) pixel coordinates, K >= 3. Returns ``(crop, x0, y0)`` with
    ``crop`` the tight bool mask (empty (0, 0) crop when the polygon covers no pixel centre).
    """
    return polygon_masks([np.asarray(xy, dtype=np.float64).reshape(-1, 2)], h, w)[0]


def polygons_mask(polygons: Sequence[np.ndarray], h: int, w: int) -> CropMask:
    """Union of several polygons of one object (COCO merges an object's parts with OR)."""
    return union_masks(polygon_masks(polygons, h, w))


def union_masks(parts: Sequence[CropMask]) -> CropMask:
    """OR of crop masks of one image."""
    parts = [p for p in parts if p[0].size]
    if not parts:
        return np.zeros((0, 0), bool), 0, 0
    if len(parts) == 1:
        return parts[0]
    x0 = min(p[1] for p in parts)
    y0 = min(p[2] for p in parts)
    x1 = max(p[1] + p[0].shape[1] for p in parts)
    y1 = max(p[2] + p[0].shape[0] for p in parts)
    out = np.zeros((y1 - y0, x1 - x0), bool)
    for crop, cx, cy in parts:
        out[cy - y0: cy - y0 + crop.shape[0], cx - x0: cx - x0 + crop.shape[1]] |= crop
    return out, x0, y0


def box_polygon(xywh: Sequence[float]) -> np.ndarray:
    """The polygon COCO uses for a box ``[x, y, w, h]`` (``rleFrBbox``): (4, 2) float64."""
    x, y, bw, bh = (float(v) for v in xywh)
    return np.array([[x, y], [x, y + bh], [x + bw, y + bh], [x + bw, y]], np.float64)


def crop_to_full(mask: CropMask, h: int, w: int) -> np.ndarray:
    """A crop mask as a full (h, w) bool frame (for tests and small images)."""
    crop, x0, y0 = mask
    out = np.zeros((h, w), bool)
    out[y0: y0 + crop.shape[0], x0: x0 + crop.shape[1]] = crop
    return out

