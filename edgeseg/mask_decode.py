"""Instance masks from prototypes and coefficients, computed inside each box only.

The result equals Ultralytics' full-frame pipeline (``process_mask`` + ``scale_masks``, or
``process_mask_native`` for retina masks), but every resize touches only a box-sized window.

How a window resize can equal a full-frame resize: a bilinear resize (align_corners=False) maps
``k`` kept source pixels onto ``n`` destination pixels. With ``g = gcd(k, n)``, every block of
``k/g`` source pixels maps onto exactly ``n/g`` destination pixels, so resizing a block-aligned
window (plus one block of context each side for the bilinear support) reproduces the full-frame
result on that window exactly. When blocks are too large to be worth it (odd frame sizes), the
same two taps per axis are gathered with numpy, also exactly (``cv2.warpAffine`` rounds sample
positions to 1/32 pixel: up to 2% of a small mask's pixels flipped); only the uint8 masks of
``scale_image`` keep warpAffine.
"""
from __future__ import annotations

from dataclasses import dataclass
import math
from math import gcd
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from .backend import TensorSpec, dequantize
from .masks import Masks
from .preprocess import Letterbox

__all__ = ["process_masks", "Axis"]

#: largest destination block (pixels) for the window resize; beyond it the taps are gathered
MAX_BLOCK = 64

Window = Tuple[int, int, int, int]  # inclusive x0, x1, y0, y1


@dataclass(frozen=True)
class Axis:
    """One axis of a bilinear resize: source pixels ``lo .. lo+k-1`` stretched onto ``n``
    destination pixels (destination pixel ``x`` samples source ``(x + 0.5) * k / n - 0.5 + lo``,
    clamped to the kept range, like ``F.interpolate`` / ``cv2.resize``)."""

    k: int
    n: int
    lo: int = 0

    @property
    def blocks(self) -> Tuple[int, int]:
        g = gcd(self.k, self.n)
        return self.k // g, self.n // g

    def affine(self) -> Tuple[float, float]:
        a = self.k / self.n
        return a, 0.5 * a - 0.5 + self.lo

    def support(self, d0: int, d1: int) -> Tuple[int, int]:
        """Inclusive source range (within the kept range) that destination pixels d0..d1 sample."""
        a, b = self.affine()
        # positions before the kept range clamp to its first pixel, whose second tap is the next one
        s0 = max(math.floor(a * d0 + b), self.lo)
        s1 = max(math.floor(a * d1 + b), self.lo) + 1
        return s0, min(s1, self.lo + self.k - 1)

    def reach(self, s0: int, s1: int) -> Tuple[int, int]:
        """Destination pixels whose bilinear sample can touch source pixels s0..s1."""
        a, b = self.affine()
        d0 = math.floor((s0 - 1 - b) / a)
        d1 = math.ceil((s1 + 1 - b) / a)
        return max(d0, 0), min(d1, self.n - 1)


def _letterbox_axes(frame_hw: Tuple[int, int], orig_hw: Tuple[int, int]) -> Tuple[Axis, Axis]:
    """Ultralytics' ``scale_masks`` (8.4): cut the letterbox padding off a frame, stretch the
    content to the source. The content is what the letterbox placed there: each side
    ``round(side * gain)`` pixels (at least one), starting at ``round(pad / 2 - 0.1)``."""
    fh, fw = frame_hw
    H, W = orig_hw
    gain = min(fh / H, fw / W)
    cw, ch = max(int(round(W * gain)), 1), max(int(round(H * gain)), 1)
    left, top = int(round((fw - cw) / 2 - 0.1)), int(round((fh - ch) / 2 - 0.1))
    # a very thin source keeps at least one row / column of the frame
    cw, ch = max(min(cw, fw - left), 1), max(min(ch, fh - top), 1)
    return Axis(cw, W, left), Axis(ch, H, top)


def _native_upsample(proto_hw: Tuple[int, int], orig_hw: Tuple[int, int]) -> int:
    """Ultralytics' ``process_mask_native`` factor: the smallest upsample (1, 2 or 4) of the
    prototypes on which the letterbox padding of the (4x proto) input falls on whole pixels."""
    mh, mw = proto_hw
    h, w = orig_hw
    gain = min(4 * mh / h, 4 * mw / w)
    pad = (4 * mh - max(int(round(h * gain)), 1)) | (4 * mw - max(int(round(w * gain)), 1))
    return 4 // gcd(4, pad | pad // 2)


class _Resize:
    """A bilinear resize from one frame to another (per-axis :class:`Axis`), evaluated on
    destination windows only. Plans are plain-int arithmetic: this runs once per detection."""

    def __init__(self, ax: Axis, ay: Axis) -> None:
        (self.bsx, self.bdx), (self.bsy, self.bdy) = ax.blocks, ay.blocks
        self.ax, self.ay = ax, ay
        self.blockwise = self.bdx <= MAX_BLOCK and self.bdy <= MAX_BLOCK
        self.nbx, self.nby = ax.n // self.bdx, ay.n // self.bdy
        self._taps: Any = None

    def plan(self, region: Window) -> Tuple[Window, Any]:
        """(source window to compute, how to finish) for destination ``region``."""
        x0, x1, y0, y1 = region
        if self.blockwise:
            # block-aligned window with one block of context each side, clamped to the kept frame
            gx0, gx1 = max(x0 // self.bdx - 1, 0), min(x1 // self.bdx + 1, self.nbx - 1)
            gy0, gy1 = max(y0 // self.bdy - 1, 0), min(y1 // self.bdy + 1, self.nby - 1)
            lx, ly = self.ax.lo, self.ay.lo
            win = (lx + gx0 * self.bsx, lx + (gx1 + 1) * self.bsx - 1, ly + gy0 * self.bsy, ly + (gy1 + 1) * self.bsy - 1)
            return win, ((gx1 - gx0 + 1) * self.bdx, (gy1 - gy0 + 1) * self.bdy, gx0 * self.bdx, gy0 * self.bdy)
        sx0, sx1 = self.ax.support(x0, x1)
        sy0, sy1 = self.ay.support(y0, y1)
        return (sx0, sx1, sy0, sy1), None

    def apply(self, src: np.ndarray, region: Window, win: Window, finish: Any) -> np.ndarray:
        """The resized values on ``region`` from ``src`` (the source values over ``win``)."""
        import cv2

        x0, x1, y0, y1 = region
        if finish is not None:
            nx, ny, ox, oy = finish
            up = cv2.resize(src, (nx, ny), interpolation=cv2.INTER_LINEAR)
            return up[y0 - oy: y1 - oy + 1, x0 - ox: x1 - ox + 1]
        if src.dtype == np.float32:  # fallback: the same bilinear taps, gathered (exact)
            if self._taps is None:  # once per frame, for every destination pixel
                self._taps = (_taps(self.ax), _taps(self.ay))
            (tx0, tx1, twx), (ty0, ty1, twy) = self._taps
            ox, oy = self.ax.lo - win[0], self.ay.lo - win[2]
            cx0, cx1, wx = tx0[x0: x1 + 1] + ox, tx1[x0: x1 + 1] + ox, twx[x0: x1 + 1]
            cy0, cy1, wy = ty0[y0: y1 + 1] + oy, ty1[y0: y1 + 1] + oy, twy[y0: y1 + 1]
            rows, r1 = src.take(cy0, axis=0), src.take(cy1, axis=0)
            r1 -= rows
            r1 *= wy[:, None]
            rows += r1
            out, c1 = rows.take(cx0, axis=1), rows.take(cx1, axis=1)
            c1 -= out
            c1 *= wx
            out += c1
            return out
        # uint8 (scale_image): warpAffine's fixed-point map (1/32-pixel coordinate rounding)
        (a, b), (c, d) = self.ax.affine(), self.ay.affine()
        M = np.array([[a, 0.0, a * x0 + b - win[0]], [0.0, c, c * y0 + d - win[2]]])
        return cv2.warpAffine(src, M, (x1 - x0 + 1, y1 - y0 + 1), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)


def _taps(axis: Axis) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear taps of every destination pixel (``F.interpolate`` / ``cv2.resize`` rule): first
    and second source index within the kept range, and the weight of the second."""
    a, b = axis.affine()
    s = np.maximum(a * np.arange(axis.n, dtype=np.float64) + (b - axis.lo), 0.0)
    i0 = np.minimum(np.floor(s).astype(np.intp), axis.k - 1)
    return i0, np.minimum(i0 + 1, axis.k - 1), (s - i0).astype(np.float32)


def _crop_pixels(b0: float, b1: float, lo: int, hi: int) -> Tuple[int, int]:
    """Pixels x with b0 <= x < b1 (Ultralytics' ``crop_mask`` rule), limited to lo..hi."""
    return max(math.ceil(b0), lo), min(math.ceil(b1) - 1, hi)


class _Protos:
    """Prototypes as float32 over the windows the detections of one frame need. Int8 prototypes
    are dequantized once, over the union of those windows (boxes of one frame overlap: a
    per-window dequantize converted the same values again for each box), to the same values a
    whole-tensor dequantize gives."""

    def __init__(self, protos: np.ndarray, nhwc: bool, windows: Sequence[Window],
                 spec: Optional[TensorSpec] = None) -> None:
        self.nhwc = nhwc
        self.ox = self.oy = 0
        if spec is None or not windows:
            self.values = protos
            return
        x0, y0 = min(w[0] for w in windows), min(w[2] for w in windows)
        x1, y1 = max(w[1] for w in windows), max(w[3] for w in windows)
        window = protos[y0: y1 + 1, x0: x1 + 1, :] if nhwc else protos[:, y0: y1 + 1, x0: x1 + 1]
        self.values, self.ox, self.oy = dequantize(window, spec), x0, y0

    def logits(self, coef: np.ndarray, win: Window) -> np.ndarray:
        """coef @ protos over an inclusive proto window -> (h, w) float32."""
        x0, x1, y0, y1 = win[0] - self.ox, win[1] - self.ox, win[2] - self.oy, win[3] - self.oy
        if self.nhwc:
            return self.values[y0: y1 + 1, x0: x1 + 1, :] @ coef
        w = self.values[:, y0: y1 + 1, x0: x1 + 1]
        nm, h, ww = w.shape
        return (coef @ w.reshape(nm, h * ww)).reshape(h, ww)


def _image_axes(frame_hw: Tuple[int, int], pad: Tuple[int, int], orig_hw: Tuple[int, int]) -> Tuple[Axis, Axis]:
    """Ultralytics' ``scale_image`` (its validation's masks for COCO JSON): cut ``left``/``top``
    pixels off both sides of each axis (one more padding row or column than the letterbox added
    stays in when the padding is uneven), stretch what is left to the source."""
    fh, fw = frame_hw
    left, top = pad
    return Axis(max(fw - 2 * left, 1), orig_hw[1], left), Axis(max(fh - 2 * top, 1), orig_hw[0], top)


def _pasted_above(values: np.ndarray, region: Window, win: Window, dtype: Any = np.float32) -> np.ndarray:
    """The binary mask ``values > 0`` known on ``region`` (zero elsewhere) over window ``win``, as
    ``dtype`` (thresholded straight into the window: no boolean intermediate)."""
    rx0, rx1, ry0, ry1 = region
    x0, x1, y0, y1 = win
    out = np.zeros((y1 - y0 + 1, x1 - x0 + 1), dtype)
    ix0, ix1, iy0, iy1 = max(x0, rx0), min(x1, rx1), max(y0, ry0), min(y1, ry1)
    if ix0 <= ix1 and iy0 <= iy1:
        np.greater(values[iy0 - ry0: iy1 - ry0 + 1, ix0 - rx0: ix1 - rx0 + 1], 0,
                   out=out[iy0 - y0: iy1 - y0 + 1, ix0 - x0: ix1 - x0 + 1])
    return out


def process_masks(protos: np.ndarray, nhwc: bool, coefs: np.ndarray, input_boxes: np.ndarray,
                  src_boxes: np.ndarray, lb: Letterbox, retina: bool = False,
                  spec: Optional[TensorSpec] = None, scale_image: bool = False) -> Masks:
    """Masks of K detections at source resolution, each kept as a crop around its box.

    ``protos``: (nm, mh, mw) or NHWC (mh, mw, nm) float32; ``coefs``: (K, nm) float32;
    ``input_boxes``: (K, 4) xyxy in model-input pixels (unclipped, as the head predicts them);
    ``src_boxes``: the same boxes in source pixels.

    Default (Ultralytics' ``process_mask`` + ``scale_masks``): logits upsampled to input
    resolution, cropped to the input box, thresholded at 0 (sigmoid 0.5); that binary mask
    resized to source resolution and thresholded at 0.5. ``retina`` (``process_mask_native``):
    logits resized straight to source resolution and cropped to the source box there.
    ``scale_image`` (what Ultralytics' validation writes to its COCO JSON): the same binary mask
    at input resolution, resized to the source as uint8 0/1 by ``scale_image``'s crop (see
    :func:`_image_axes`) and OpenCV's fixed-point rounding. ``spec``: quantization of int8 protos.
    """
    H, W = lb.orig_shape
    ih, iw = lb.input_shape
    mh, mw = (protos.shape[0], protos.shape[1]) if nhwc else (protos.shape[1], protos.shape[2])
    crops: List[np.ndarray] = []
    offsets: List[Tuple[int, int]] = []
    empty = np.zeros((0, 0), bool)

    if retina:
        # Ultralytics' process_mask_native (8.4) first upsamples the logits by f (1, 2 or 4), the
        # least that puts the letterbox padding on whole pixels, then crops and stretches that
        f = _native_upsample((mh, mw), (H, W))
        pre = _Resize(Axis(mw, f * mw), Axis(mh, f * mh)) if f > 1 else None
        to_src = _Resize(*_letterbox_axes((f * mh, f * mw), (H, W)))
        jobs = []  # (k, region, source-frame window, finish, proto window, finish)
        for k, (x1b, y1b, x2b, y2b) in enumerate(src_boxes.tolist()):
            (x0, x1), (y0, y1) = _crop_pixels(x1b, x2b, 0, W - 1), _crop_pixels(y1b, y2b, 0, H - 1)
            if x1 < x0 or y1 < y0:
                jobs.append(None)
                continue
            region = (x0, x1, y0, y1)
            win, finish = to_src.plan(region)
            pwin, pfinish = pre.plan(win) if pre is not None else (win, None)
            jobs.append((k, region, win, finish, pwin, pfinish))
        source = _Protos(protos, nhwc, [j[4] for j in jobs if j is not None], spec)
        for job in jobs:
            if job is None:
                crops.append(empty)
                offsets.append((0, 0))
                continue
            k, region, win, finish, pwin, pfinish = job
            vals = source.logits(coefs[k], pwin)
            if pre is not None:
                vals = pre.apply(vals, win, pwin, pfinish)
            crops.append(to_src.apply(vals, region, win, finish) > 0)
            offsets.append((region[0], region[2]))
        return Masks(crops, np.array(offsets, np.int32).reshape(-1, 2), (H, W), validate=False)

    up = _Resize(Axis(mw, iw), Axis(mh, ih))  # protos -> input frame
    if scale_image:
        sx, sy = _image_axes((ih, iw), lb.pad, (H, W))
    else:
        sx, sy = _letterbox_axes((ih, iw), (H, W))  # input frame -> source (scale_masks)
    dtype, cut = (np.uint8, 0) if scale_image else (np.float32, 0.5)
    down = _Resize(sx, sy)
    # input pixels that scale_masks keeps: the un-padded image area
    kx0, kx1, ky0, ky1 = sx.lo, sx.lo + sx.k - 1, sy.lo, sy.lo + sy.k - 1
    jobs = []  # (k, input-frame region, proto window, finish)
    for k, (x1b, y1b, x2b, y2b) in enumerate(input_boxes.tolist()):
        (x0, x1), (y0, y1) = _crop_pixels(x1b, x2b, kx0, kx1), _crop_pixels(y1b, y2b, ky0, ky1)
        if x1 < x0 or y1 < y0:
            jobs.append(None)
            continue
        region = (x0, x1, y0, y1)
        jobs.append((k, region, *up.plan(region)))
    source = _Protos(protos, nhwc, [j[2] for j in jobs if j is not None], spec)
    for job in jobs:
        if job is None:
            crops.append(empty)
            offsets.append((0, 0))
            continue
        k, region, win, finish = job
        logits = up.apply(source.logits(coefs[k], win), region, win, finish)
        x0, x1, y0, y1 = region
        (dx0, dx1), (dy0, dy1) = sx.reach(x0, x1), sy.reach(y0, y1)
        dst = (dx0, dx1, dy0, dy1)
        win2, finish2 = down.plan(dst)
        crops.append(down.apply(_pasted_above(logits, region, win2, dtype), dst, win2, finish2) > cut)
        offsets.append((dx0, dy0))
    return Masks(crops, np.array(offsets, np.int32).reshape(-1, 2), (H, W), validate=False)
