"""Assignment for the trackers, in numpy: IoU matrices and an exact min-cost matching with a cost limit.

:func:`linear_assignment` gives the same matching as ``lap.lapjv(cost, extend_cost=True,
cost_limit=thresh)`` (what ByteTrack uses): the total cost is minimal, each matched pair costs at
most ``thresh``, and leaving a row and a column unmatched costs ``thresh`` (so a pair is matched only
when that is cheaper). The feasible pairs split into small independent groups in tracking (objects
only compete with their neighbours), so each group is solved alone with the Hungarian method
(shortest augmenting paths, O(n^3) in the group size) and single pairs need no solver at all.
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np

__all__ = ["linear_assignment", "hungarian", "iou_matrix"]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4), both xyxy -> (N, M) float64."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float64)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.maximum(iw, 0.0) * np.maximum(ih, 0.0)
    area_a = np.maximum(a[:, 2] - a[:, 0], 0.0) * np.maximum(a[:, 3] - a[:, 1], 0.0)
    area_b = np.maximum(b[:, 2] - b[:, 0], 0.0) * np.maximum(b[:, 3] - b[:, 1], 0.0)
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / np.maximum(union, 1e-12)


def hungarian(cost: np.ndarray) -> np.ndarray:
    """Minimum-cost perfect matching of a square (n, n) finite cost matrix: ``col[i]`` for each row ``i``.

    The shortest-augmenting-path form of the Hungarian method (Jonker-Volgenant style potentials),
    with the inner scan over columns vectorized."""
    c = np.asarray(cost, np.float64)
    n = c.shape[0]
    if c.shape != (n, n):
        raise ValueError(f"hungarian: expected a square matrix, found shape {c.shape}")
    inf = np.inf
    u = np.zeros(n + 1)
    v = np.zeros(n + 1)
    p = np.zeros(n + 1, np.int64)  # p[j]: row (1-based) matched to column j (1-based); 0 = free
    way = np.zeros(n + 1, np.int64)
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv = np.full(n + 1, inf)
        used = np.zeros(n + 1, bool)
        while True:
            used[j0] = True
            i0 = p[j0]
            free = ~used[1:]
            cur = c[i0 - 1] - u[i0] - v[1:]
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            masked = np.where(free, minv[1:], inf)
            j1 = int(np.argmin(masked)) + 1
            delta = masked[j1 - 1]
            u[p[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    col = np.empty(n, np.int64)
    col[p[1:] - 1] = np.arange(n)
    return col


def _groups(feasible: np.ndarray) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Connected groups of rows and columns joined by feasible pairs (union-find)."""
    n, m = feasible.shape
    parent = list(range(n + m))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in zip(*np.nonzero(feasible)):
        a, b = find(int(i)), find(n + int(j))
        if a != b:
            parent[a] = b
    members: dict = {}
    for x in range(n + m):
        members.setdefault(find(x), []).append(x)
    out = []
    for xs in members.values():
        rows = np.array([x for x in xs if x < n], np.int64)
        cols = np.array([x - n for x in xs if x >= n], np.int64)
        if len(rows) and len(cols):
            out.append((rows, cols))
    return out


def linear_assignment(cost: np.ndarray, thresh: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Match rows to columns of ``cost`` (N, M) at minimal total cost, no pair above ``thresh``.

    Returns ``(matches (K, 2) int64 [row, col], unmatched rows, unmatched cols)``, sorted by row.
    Entries that are NaN or infinite are never matched."""
    cost = np.asarray(cost, np.float64)
    n, m = cost.shape
    if n == 0 or m == 0:
        return np.zeros((0, 2), np.int64), np.arange(n), np.arange(m)
    feasible = np.isfinite(cost) & (cost <= thresh)
    row_deg, col_deg = feasible.sum(axis=1), feasible.sum(axis=0)
    if row_deg.max() <= 1 and col_deg.max() <= 1:  # the common case: no competition at all
        r, c = np.nonzero(feasible)
        matches = list(zip(r.tolist(), c.tolist()))
    else:
        matches = []
        for rows, cols in _groups(feasible):
            if len(rows) == 1 and len(cols) == 1:
                matches.append((int(rows[0]), int(cols[0])))
                continue
            # lapjv's extension: every row and column may go to a dummy at thresh / 2
            sub_ok = feasible[np.ix_(rows, cols)]
            sub = np.where(sub_ok, cost[np.ix_(rows, cols)], thresh + 1.0)
            r, c = len(rows), len(cols)
            big = np.full((r + c, r + c), thresh / 2.0)
            big[:r, :c] = sub
            big[r:, c:] = 0.0
            col = hungarian(big)
            for i in range(r):
                j = int(col[i])
                if j < c and sub_ok[i, j]:
                    matches.append((int(rows[i]), int(cols[j])))
        matches.sort()
    mt = np.array(matches, np.int64).reshape(-1, 2)
    free_r = np.ones(n, bool)
    free_r[mt[:, 0]] = False
    free_c = np.ones(m, bool)
    free_c[mt[:, 1]] = False
    return mt, np.nonzero(free_r)[0], np.nonzero(free_c)[0]
