"""Instance masks from prototypes and coefficients, computed inside each box only.

The result equals Ultralytics' full-frame pipeline (``process_mask`` + ``scale_masks``, or
``process_mask_native`` for retina masks), but every resize touches only a box-sized window.

How a window resize can equal a full-frame resize: a bilinear resize (align_corners=False) maps
``k`` kept source pixels onto ``n`` destination pixels. With ``g = gcd(k, n)``, every block of
``k/g`` source pixels maps onto exactly ``n/g`` destination pixels, so resizing a block-aligned
window (plus one block of context each side for the bilinear support) reproduces the full-frame
result on that window exactly. When blocks are too large to be worth it (odd frame sizes), the
same map is applied with ``cv2.warpAffine``, which differs only by OpenCV's 1/32-pixel
coordinate rounding.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import gcd
from typing import Callable, List, Optional, Tuple

import numpy as np

from .masks import Masks
from .preprocess import Letterbox

__all__ = ["process_masks", "Axis"]

#: largest destination block (pixels) for the exact window resize; beyond it warpAffine is used
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
        s0 = int(np.floor(a * d0 + b))
        s1 = int(np.floor(a * d1 + b)) + 1
        return max(s0, self.lo), min(s1, self.lo + self.k - 1)

    def reach(self, s0: int, s1: int) -> Tuple[int, int]:
        """Destination pixels whose bilinear sample can touch source pixels s0..s1."""
        a, b = self.affine()
        d0 = int(np.floor((s0 - 1 - b) / a))
        d1 = int(np.ceil((s1 + 1 - b) / a))
        return max(d0, 0), min(d1, self.n - 1)


def _letterbox_axes(frame_hw: Tuple[int, int], orig_hw: Tuple[int, int]) -> Tuple[Axis, Axis]:
    """Ultralytics' ``scale_masks``: cut the letterbox padding off a frame, stretch it to the source."""
    fh, fw = frame_hw
    H, W = orig_hw
    gain = min(fh / H, fw / W)
    padw, padh = (fw - W * gain) / 2, (fh - H * gain) / 2
    top, left = int(round(padh - 0.1)), int(round(padw - 0.1))
    bottom, right = fh - int(round(padh + 0.1)), fw - int(round(padw + 0.1))
    return Axis(right - left, W, left), Axis(bottom - top, H, top)


def _resize_window(src_of: Callable[[Window], np.ndarray], ax: Axis, ay: Axis, region: Window) -> np.ndarray:
    """Bilinear resize of a source frame, evaluated on destination ``region`` only.
    ``src_of(window)`` returns the source frame's values over an inclusive window."""
    import cv2

    x0, x1, y0, y1 = region
    (bsx, bdx), (bsy, bdy) = ax.blocks, ay.blocks
    if bdx <= MAX_BLOCK and bdy <= MAX_BLOCK:
        # block-aligned window with one block of context each side, clamped to the kept frame
        gx0, gx1 = max(x0 // bdx - 1, 0), min(x1 // bdx + 1, ax.n // bdx - 1)
        gy0, gy1 = max(y0 // bdy - 1, 0), min(y1 // bdy + 1, ay.n // bdy - 1)
        win = (ax.lo + gx0 * bsx, ax.lo + (gx1 + 1) * bsx - 1, ay.lo + gy0 * bsy, ay.lo + (gy1 + 1) * bsy - 1)
        src = src_of(win)
        up = cv2.resize(src, ((gx1 - gx0 + 1) * bdx, (gy1 - gy0 + 1) * bdy), interpolation=cv2.INTER_LINEAR)
        ox, oy = gx0 * bdx, gy0 * bdy
        return up[y0 - oy: y1 - oy + 1, x0 - ox: x1 - ox + 1]
    # fallback: the same affine map through warpAffine, on the sampled source window only
    sx0, sx1 = ax.support(x0, x1)
    sy0, sy1 = ay.support(y0, y1)
    src = src_of((sx0, sx1, sy0, sy1))
    (a, b), (c, d) = ax.affine(), ay.affine()
    M = np.array([[a, 0.0, a * x0 + b - sx0], [0.0, c, c * y0 + d - sy0]])
    return cv2.warpAffine(src, M, (x1 - x0 + 1, y1 - y0 + 1), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def _box_pixels(box: np.ndarray, ax: Axis, ay: Axis) -> Optional[Window]:
    """Destination pixels x with box_x1 <= x < box_x2 (Ultralytics' ``crop_mask`` rule), or None."""
    x0, x1 = max(int(np.ceil(box[0])), 0), min(int(np.ceil(box[2])) - 1, ax.n - 1)
    y0, y1 = max(int(np.ceil(box[1])), 0), min(int(np.ceil(box[3])) - 1, ay.n - 1)
    return None if x1 < x0 or y1 < y0 else (x0, x1, y0, y1)


def _logits_of(protos: np.ndarray, nhwc: bool, coef: np.ndarray) -> Callable[[Window], np.ndarray]:
    """coef @ protos over an inclusive proto window -> (h, w) float32."""

    def values(win: Window) -> np.ndarray:
        x0, x1, y0, y1 = win
        if nhwc:
            return protos[y0: y1 + 1, x0: x1 + 1, :] @ coef
        w = protos[:, y0: y1 + 1, x0: x1 + 1]
        nm, h, ww = w.shape
        return (coef @ w.reshape(nm, h * ww)).reshape(h, ww)

    return values


def _pasted(binary: np.ndarray, region: Window) -> Callable[[Window], np.ndarray]:
    """A binary mask known on ``region`` (zero elsewhere) read over any window, as float32."""
    rx0, rx1, ry0, ry1 = region

    def values(win: Window) -> np.ndarray:
        x0, x1, y0, y1 = win
        out = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.float32)
        ix0, ix1, iy0, iy1 = max(x0, rx0), min(x1, rx1), max(y0, ry0), min(y1, ry1)
        if ix0 <= ix1 and iy0 <= iy1:
            out[iy0 - y0: iy1 - y0 + 1, ix0 - x0: ix1 - x0 + 1] = binary[iy0 - ry0: iy1 - ry0 + 1, ix0 - rx0: ix1 - rx0 + 1]
        return out

    return values


def process_masks(protos: np.ndarray, nhwc: bool, coefs: np.ndarray, input_boxes: np.ndarray,
                  src_boxes: np.ndarray, lb: Letterbox, retina: bool = False) -> Masks:
    """Masks of K detections at source resolution, each kept as a crop around its box.

    ``protos``: (nm, mh, mw) or NHWC (mh, mw, nm) float32; ``coefs``: (K, nm) float32;
    ``input_boxes``: (K, 4) xyxy in model-input pixels (unclipped, as the head predicts them);
    ``src_boxes``: the same boxes in source pixels.

    Default (Ultralytics' ``process_mask`` + ``scale_masks``): logits upsampled to input
    resolution, cropped to the input box, thresholded at 0 (sigmoid 0.5); that binary mask
    resized to source resolution and thresholded at 0.5. ``retina`` (``process_mask_native``):
    logits resized straight to source resolution and cropped to the source box there.
    """
    H, W = lb.orig_shape
    ih, iw = lb.input_shape
    mh, mw = (protos.shape[0], protos.shape[1]) if nhwc else (protos.shape[1], protos.shape[2])
    crops: List[np.ndarray] = []
    offsets: List[Tuple[int, int]] = []

    def empty() -> None:
        crops.append(np.zeros((0, 0), bool))
        offsets.append((0, 0))

    if retina:
        px, py = _letterbox_axes((mh, mw), (H, W))
        for k in range(len(coefs)):
            region = _box_pixels(src_boxes[k], px, py)
            if region is None:
                empty()
                continue
            crops.append(_resize_window(_logits_of(protos, nhwc, coefs[k]), px, py, region) > 0)
            offsets.append((region[0], region[2]))
        return Masks(crops, np.array(offsets, np.int32).reshape(-1, 2), (H, W))

    up_x, up_y = Axis(mw, iw), Axis(mh, ih)  # protos -> input frame
    sx, sy = _letterbox_axes((ih, iw), (H, W))  # input frame -> source
    for k in range(len(coefs)):
        region = _box_pixels(input_boxes[k], up_x, up_y)
        if region is not None:  # keep only what scale_masks keeps (the un-padded image area)
            x0, x1, y0, y1 = region
            x0, x1 = max(x0, sx.lo), min(x1, sx.lo + sx.k - 1)
            y0, y1 = max(y0, sy.lo), min(y1, sy.lo + sy.k - 1)
            region = None if x1 < x0 or y1 < y0 else (x0, x1, y0, y1)
        if region is None:
            empty()
            continue
        binary = _resize_window(_logits_of(protos, nhwc, coefs[k]), up_x, up_y, region) > 0
        (dx0, dx1), (dy0, dy1) = sx.reach(region[0], region[1]), sy.reach(region[2], region[3])
        src_region = (dx0, dx1, dy0, dy1)
        crops.append(_resize_window(_pasted(binary, region), sx, sy, src_region) > 0.5)
        offsets.append((dx0, dy0))
    return Masks(crops, np.array(offsets, np.int32).reshape(-1, 2), (H, W))
