"""COCO RLE ground truth (crowd regions, RLE annotations) as crop masks."""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

import numpy as np

from ..errors import DatasetError
from ..masks import rle_from_string
from .polygon import CropMask

__all__ = ["rle_to_crop", "rle_counts", "rle_strings"]


def rle_counts(rle: Dict[str, Any]) -> np.ndarray:
    """The run lengths of a COCO RLE dict (string or list ``counts``) as int64."""
    counts = rle.get("counts")
    if isinstance(counts, (str, bytes)):
        counts = rle_from_string(counts)
    try:
        arr = np.asarray(counts, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"RLE counts must be a list of integers or a COCO string, found {type(counts).__name__}") from exc
    if (arr < 0).any():
        raise DatasetError("RLE counts must be non-negative")
    return arr


def rle_to_crop(rle: Dict[str, Any], h: int, w: int) -> CropMask:
    """Decode a COCO RLE (column-major, starting with zeros) of an (h, w) image to a tight crop.

    Raises :class:`DatasetError` when the RLE's ``size`` or its counts do not fit (h, w).
    """
    size = rle.get("size")
    if size is None or [int(size[0]), int(size[1])] != [int(h), int(w)]:
        raise DatasetError(f"RLE size {size} does not match the image size [{h}, {w}]")
    counts = rle_counts(rle)
    total = int(counts.sum())
    if total != h * w:
        raise DatasetError(f"RLE counts sum to {total}, expected {h * w} for a {h}x{w} image")
    ends = np.cumsum(counts)
    starts = ends - counts
    on_s, on_e = starts[1::2], ends[1::2]
    keep = on_e > on_s
    on_s, on_e = on_s[keep], on_e[keep]
    if len(on_s) == 0:
        return np.zeros((0, 0), bool), 0, 0
    c0, c1 = int(on_s.min() // h), int((on_e.max() - 1) // h)
    base = c0 * h
    flat = np.zeros((c1 - c0 + 1) * h + 1, np.int32)
    np.add.at(flat, on_s - base, 1)
    np.add.at(flat, on_e - base, -1)
    cols = (np.cumsum(flat[:-1]) > 0).reshape(c1 - c0 + 1, h)
    rows = np.flatnonzero(cols.any(axis=0))
    xs = np.flatnonzero(cols.any(axis=1))
    crop = cols[xs[0]: xs[-1] + 1, rows[0]: rows[-1] + 1].T.copy()
    return crop, c0 + int(xs[0]), int(rows[0])


def rle_strings(crops: Sequence[np.ndarray], offsets: np.ndarray, h: int, w: int) -> List[str]:
    """COCO compressed RLE strings of many crop masks of one (h, w) image, vectorized.

    ``crops[i]``: bool (h_i, w_i) at ``offsets[i]`` = (x0, y0). Gives the same strings as
    pycocotools' ``encode`` of the full masks (column-major runs starting with zeros, then the
    ``rleToString`` 6-bit encoding), with a few numpy passes for the whole image instead of a
    Python loop per mask and per run.
    """
    n = len(crops)
    if n == 0:
        return []
    offsets = np.asarray(offsets, np.int64).reshape(n, 2)
    hs = np.array([c.shape[0] for c in crops], np.int64)
    ws = np.array([c.shape[1] for c in crops], np.int64)
    sizes = (hs + 2) * ws
    starts = np.concatenate(([0], np.cumsum(sizes)))
    flat = np.zeros(int(starts[-1]) + 1, np.int8)
    for i, c in enumerate(crops):  # each column gets a zero above and below: runs never cross
        if c.size:
            flat[starts[i]: starts[i + 1]].reshape(ws[i], hs[i] + 2)[:, 1:-1] = c.T
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    mid = np.searchsorted(starts, change, side="right") - 1
    col, row = np.divmod(change - starts[mid], hs[mid] + 2)
    pos = (offsets[mid, 0] + col) * h + offsets[mid, 1] + row - 1
    # a run ending at a column's bottom and one starting at the next column's top share a
    # boundary: both go; so does a boundary at the very end of the image
    dup = (pos[1:] == pos[:-1]) & (mid[1:] == mid[:-1])
    drop = np.zeros(len(pos), bool)
    drop[:-1] |= dup
    drop[1:] |= dup
    drop |= pos >= h * w
    pos, mid = pos[~drop], mid[~drop]
    # counts of mask m: pos_1 - 0, pos_2 - pos_1, ..., h*w - pos_k
    per = np.bincount(mid, minlength=n)
    ncounts = per + 1
    cstart = np.concatenate(([0], np.cumsum(ncounts)))
    total = int(cstart[-1])
    values = np.full(total, h * w, np.int64)  # the last count of each mask starts as h*w
    cm = np.repeat(np.arange(n), ncounts)
    ci = np.arange(total) - cstart[cm]
    is_pos = ci < per[cm]
    values[is_pos] = pos  # positions, in order, then h*w
    prev = np.zeros(total, np.int64)
    shift = ci > 0
    prev[shift] = values[np.flatnonzero(shift) - 1]
    counts = values - prev
    # rleToString: from the 4th count on, store the difference to the count two before
    x = counts.copy()
    later = ci > 2
    x[later] -= counts[np.flatnonzero(later) - 2]
    k = np.arange(7)
    chunk = (x[:, None] >> (5 * k)) & 0x1F
    rest = x[:, None] >> (5 * (k + 1))
    more = np.where(chunk & 0x10, rest != -1, rest != 0)
    nchunks = np.argmin(more, axis=1) + 1
    used = k[None, :] < nchunks[:, None]
    chars = (chunk | np.where(k[None, :] < (nchunks[:, None] - 1), 0x20, 0)) + 48
    text = chars[used].astype(np.uint8).tobytes().decode("ascii")
    nchar = np.bincount(cm, weights=nchunks, minlength=n).astype(np.int64)
    bounds = np.concatenate(([0], np.cumsum(nchar)))
    return [text[bounds[i]: bounds[i + 1]] for i in range(n)]
