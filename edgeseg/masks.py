"""Per-detection masks kept inside their boxes, with dense, polygon and COCO-RLE views on demand.

A detection's mask is a bool crop plus the crop's top-left corner in source-image pixels.
Nothing here allocates N x H x W unless :meth:`Masks.dense` is asked for.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple, Union

import numpy as np

from .errors import InputError

__all__ = ["Masks", "rle_encode_counts", "rle_strings", "rle_to_string", "rle_from_string", "rle_decode"]


class Masks:
    """Masks of N detections at source resolution.

    ``crops[i]``: bool array (h_i, w_i), the mask inside its box; ``offsets[i]``: (x0, y0) int,
    the crop's top-left corner in source pixels; ``orig_shape``: (H, W) of the source image.
    ``validate=False`` skips the per-crop checks (for crops made by edgeseg's own decoder).
    """

    __slots__ = ("crops", "offsets", "orig_shape")

    def __init__(self, crops: Sequence[np.ndarray], offsets: Any, orig_shape: Tuple[int, int],
                 validate: bool = True) -> None:
        offsets = np.asarray(offsets, dtype=np.int32).reshape(-1, 2)
        if len(crops) != len(offsets):
            raise InputError(f"Masks: {len(crops)} crops but {len(offsets)} offsets")
        h, w = int(orig_shape[0]), int(orig_shape[1])
        for i, (c, (x0, y0)) in enumerate(zip(crops, offsets) if validate else ()):
            if c.ndim != 2 or c.dtype != np.bool_:
                raise InputError(f"Masks: crop {i} must be a 2-D bool array, found {c.dtype} {c.shape}")
            if x0 < 0 or y0 < 0 or x0 + c.shape[1] > w or y0 + c.shape[0] > h:
                raise InputError(f"Masks: crop {i} at ({x0},{y0}) size {c.shape[::-1]} exceeds the {w}x{h} image")
        self.crops: List[np.ndarray] = list(crops)
        self.offsets: np.ndarray = offsets
        self.orig_shape: Tuple[int, int] = (h, w)

    # -- container protocol -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, index: Any) -> "Masks":
        idx = np.arange(len(self))[index]
        idx = np.atleast_1d(idx)
        return Masks([self.crops[i] for i in idx], self.offsets[idx], self.orig_shape, validate=False)

    def __repr__(self) -> str:
        return f"Masks(n={len(self)}, orig_shape={self.orig_shape})"

    @classmethod
    def empty(cls, orig_shape: Tuple[int, int]) -> "Masks":
        return cls([], np.zeros((0, 2), np.int32), orig_shape)

    @classmethod
    def from_dense(cls, masks: np.ndarray) -> "Masks":
        """From an (N, H, W) array (nonzero = inside); each mask is cropped to its tight box."""
        masks = np.asarray(masks)
        if masks.ndim != 3:
            raise InputError(f"Masks.from_dense: expected (N, H, W), found shape {masks.shape}")
        crops, offsets = [], []
        for m in masks.astype(bool):
            ys, xs = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
            if len(ys) == 0:
                crops.append(np.zeros((0, 0), bool))
                offsets.append((0, 0))
                continue
            crops.append(m[ys[0]: ys[-1] + 1, xs[0]: xs[-1] + 1].copy())
            offsets.append((xs[0], ys[0]))
        return cls(crops, np.array(offsets, np.int32).reshape(-1, 2), masks.shape[1:])  # type: ignore[arg-type]

    # -- views ----------------------------------------------------------------------------------
    def mask(self, i: int) -> np.ndarray:
        """Mask ``i`` as a full (H, W) bool frame."""
        out = np.zeros(self.orig_shape, bool)
        c = self.crops[i]
        x0, y0 = self.offsets[i]
        out[y0: y0 + c.shape[0], x0: x0 + c.shape[1]] = c
        return out

    def dense(self) -> np.ndarray:
        """All masks as an (N, H, W) bool array at source resolution (built on demand)."""
        out = np.zeros((len(self),) + self.orig_shape, bool)
        for i, (c, (x0, y0)) in enumerate(zip(self.crops, self.offsets)):
            out[i, y0: y0 + c.shape[0], x0: x0 + c.shape[1]] = c
        return out

    def areas(self) -> np.ndarray:
        """Pixel count of each mask, (N,) int64."""
        return np.array([int(c.sum()) for c in self.crops], dtype=np.int64)

    def boxes(self) -> np.ndarray:
        """Tight xyxy box of each mask in source pixels, (N, 4) float32 (zeros for empty masks)."""
        out = np.zeros((len(self), 4), np.float32)
        for i, (c, (x0, y0)) in enumerate(zip(self.crops, self.offsets)):
            if c.size == 0 or not c.any():
                continue
            ys, xs = np.nonzero(c.any(axis=1))[0], np.nonzero(c.any(axis=0))[0]
            out[i] = (x0 + xs[0], y0 + ys[0], x0 + xs[-1] + 1, y0 + ys[-1] + 1)
        return out

    def polygons(self, largest_only: bool = False) -> List[List[np.ndarray]]:
        """Outer contours of each mask in source pixels: per detection a list of (K, 2) float32
        polygons, largest first (``largest_only`` keeps one per detection)."""
        import cv2

        out: List[List[np.ndarray]] = []
        for c, (x0, y0) in zip(self.crops, self.offsets):
            if c.size == 0 or not c.any():
                out.append([])
                continue
            contours, _ = cv2.findContours(c.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            polys = sorted((p.reshape(-1, 2).astype(np.float32) + (x0, y0) for p in contours), key=len, reverse=True)
            out.append(polys[:1] if largest_only else polys)
        return out

    def rle(self, compressed: bool = False) -> List[Dict[str, Any]]:
        """COCO RLE of each mask at source resolution: ``{"size": [H, W], "counts": ...}``,
        column-major, starting with a run of zeros. ``counts`` is a list of ints, or the COCO
        compressed string when ``compressed``."""
        h, w = self.orig_shape
        if compressed:
            return [{"size": [h, w], "counts": s} for s in rle_strings(self.crops, self.offsets, h, w)]
        return [{"size": [h, w], "counts": rle_encode_counts(c, int(x0), int(y0), h, w)}
                for c, (x0, y0) in zip(self.crops, self.offsets)]


def rle_encode_counts(crop: np.ndarray, x0: int, y0: int, h: int, w: int) -> List[int]:
    """Uncompressed COCO RLE counts of a crop placed at (x0, y0) in an (h, w) frame, computed
    from the crop alone (vectorized, no full-frame allocation)."""
    ch, cw = crop.shape
    if ch == 0 or cw == 0 or not crop.any():
        return [h * w]
    # pad one zero row above and below each column so every run starts and ends inside a column
    padded = np.zeros((ch + 2, cw), np.int8)
    padded[1:-1] = crop
    flat = padded.ravel(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1  # index in padded column-major order where value changes
    col, row = np.divmod(change, ch + 2)
    pos = (x0 + col) * h + (y0 + row - 1)  # global column-major index of the first pixel after the change
    # a run ending at the bottom of a column and one starting at the top of the next one touch:
    # their two boundaries coincide and cancel; a run ending at the very last pixel needs no boundary
    uniq, n = np.unique(pos, return_counts=True)
    pos = uniq[(n == 1) & (uniq < h * w)]
    bounds = np.concatenate(([0], pos, [h * w]))
    return np.diff(bounds).astype(np.int64).tolist()


def rle_decode(rle: Dict[str, Any]) -> np.ndarray:
    """A COCO RLE dict (list or string counts) to an (H, W) bool mask."""
    h, w = rle["size"]
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = rle_from_string(counts)
    counts = np.asarray(counts, np.int64)
    if counts.sum() != h * w:
        raise InputError(f"RLE counts sum to {counts.sum()}, expected {h * w} for size {h}x{w}")
    values = np.zeros(len(counts), bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return flat.reshape((w, h)).T


def rle_to_string(counts: Sequence[int]) -> str:
    """COCO's compressed RLE string (the LEB128-like encoding of pycocotools' ``rleToString``)."""
    out = []
    cnts = list(counts)
    for i, x in enumerate(cnts):
        x = int(x)
        if i > 2:
            x -= int(cnts[i - 2])
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def rle_from_string(s: Union[str, bytes]) -> List[int]:
    """Inverse of :func:`rle_to_string`."""
    if isinstance(s, bytes):
        s = s.decode("ascii")
    counts: List[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


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
