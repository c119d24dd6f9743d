"""COCO RLE ground truth (crowd regions, RLE annotations) as crop masks."""
from __future__ import annotations

from typing import Any, Dict

import numpy as np

from ...errors import DatasetError
from ...masks import rle_from_string, rle_strings  # noqa: F401  (rle_strings: re-exported)
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
