"""Box and mask scaling to the source equal Ultralytics 8.4's (``scale_boxes``, ``process_mask`` +
``scale_masks``, ``process_mask_native``), on source sizes whose letterbox rounds each side.

The references below are full-frame re-implementations of those Ultralytics functions in numpy +
OpenCV (``cv2.resize`` bilinear is ``F.interpolate(mode="bilinear")`` here); edgeseg computes the
same masks box by box. ``scripts/compare_ultralytics.py`` checks the same against Ultralytics itself.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from edgeseg.mask_decode import process_masks
from edgeseg.preprocess import letterbox_geometry

# (source H, W), letterbox size: sizes where round(side * gain) is not side * gain
SHAPES = [((428, 288), 640), ((163, 217), 640), ((701, 331), 320), ((495, 500), 640), ((573, 640), 320),
          ((480, 640), 640)]


def _content(frame_hw, orig_hw):
    """Ultralytics 8.4 scale_masks: the frame's letterbox content (top, left, h, w)."""
    (fh, fw), (H, W) = frame_hw, orig_hw
    gain = min(fh / H, fw / W)
    ch, cw = max(round(H * gain), 1), max(round(W * gain), 1)
    return round((fh - ch) / 2 - 0.1), round((fw - cw) / 2 - 0.1), ch, cw


def _scale(frames, orig_hw):
    top, left, ch, cw = _content(frames.shape[1:], orig_hw)
    return np.stack([cv2.resize(f[top: top + ch, left: left + cw], orig_hw[::-1], interpolation=cv2.INTER_LINEAR)
                     for f in frames])


def _crop(masks, boxes):
    h, w = masks.shape[1:]
    c, r = np.arange(w)[None, None, :], np.arange(h)[None, :, None]
    x1, y1, x2, y2 = (boxes[:, i, None, None] for i in range(4))
    return masks & (c >= x1) & (c < x2) & (r >= y1) & (r < y2)


def _reference(protos, coefs, in_boxes, src_boxes, input_hw, orig_hw, retina):
    nm, mh, mw = protos.shape
    logits = (coefs @ protos.reshape(nm, -1)).reshape(-1, mh, mw)
    if retina:  # process_mask_native
        H, W = orig_hw
        gain = min(4 * mh / H, 4 * mw / W)
        pad = (4 * mh - max(round(H * gain), 1)) | (4 * mw - max(round(W * gain), 1))
        f = 4 // math.gcd(4, pad | pad // 2)
        if f > 1:
            logits = np.stack([cv2.resize(x, (f * mw, f * mh), interpolation=cv2.INTER_LINEAR) for x in logits])
        return _crop(_scale(logits, orig_hw) > 0, src_boxes)
    up = np.stack([cv2.resize(x, input_hw[::-1], interpolation=cv2.INTER_LINEAR) for x in logits])
    binary = _crop(up > 0, in_boxes).astype(np.float32)  # process_mask(upsample=True)
    return _scale(binary, orig_hw) > 0.5  # scale_masks, then > 0.5


def _case(orig, size, seed):
    rng = np.random.default_rng(seed)
    lb = letterbox_geometry(orig, (size, size))
    mh = mw = size // 4
    # smooth prototypes (blurred noise) so masks are blobs with long edges, like real ones
    protos = np.stack([cv2.GaussianBlur(rng.normal(size=(mh, mw)).astype(np.float32), (0, 0), 3) for _ in range(8)])
    (top, left), (rh, rw) = lb.pad[::-1], lb.resized
    n = 12
    x1 = rng.uniform(left - 8, left + rw * 0.7, n)
    y1 = rng.uniform(top - 8, top + rh * 0.7, n)
    boxes = np.stack([x1, y1, x1 + rng.uniform(6, rw * 0.6, n), y1 + rng.uniform(6, rh * 0.6, n)], 1).astype(np.float32)
    coefs = rng.normal(size=(n, 8)).astype(np.float32) * 4
    return lb, protos, coefs, boxes, lb.to_source(boxes.copy())


@pytest.mark.parametrize("retina", [False, True], ids=["default", "retina"])
@pytest.mark.parametrize("orig, size", SHAPES)
def test_masks_equal_ultralytics_full_frame_scaling(orig, size, retina):
    """Before the fix, scale_masks' crop was taken from the unrounded gain (one input pixel off the
    letterbox content on 428x288) and retina masks skipped process_mask_native's upsampling (half a
    prototype pixel off where the padding is odd: mask IoU 0.90 on a 331x701 photo), and odd frame
    sizes went through warpAffine, whose 1/32-pixel sample positions flipped up to 7% of a mask."""
    for seed in range(3):
        lb, protos, coefs, in_boxes, src_boxes = _case(orig, size, seed)
        ref = _reference(protos, coefs, in_boxes, src_boxes, lb.input_shape, orig, retina)
        ours = process_masks(protos, False, coefs, in_boxes, src_boxes, lb, retina=retina)
        for k in range(len(coefs)):
            diff = int((ours.mask(k) ^ ref[k]).sum())
            assert diff == 0, f"{orig} at {size}, seed {seed}, mask {k}: {diff} pixels differ"


@pytest.mark.parametrize("orig, size", SHAPES)
def test_boxes_use_the_resize_of_each_axis(orig, size):
    """Ultralytics' scale_boxes divides each axis by ``resized / orig`` of that axis, not by the
    one letterbox gain: the centre of the resized content is the centre of the source, exactly
    (on 495x500 at 640 the single gain put y 0.16 px off there, 0.25 px at y 392)."""
    lb = letterbox_geometry(orig, (size, size))
    (left, top), (rh, rw) = lb.pad, lb.resized
    box = np.array([[left + rw / 2, top + rh / 2, left + rw, top + rh]], np.float32)
    np.testing.assert_allclose(lb.to_source(box)[0], [orig[1] / 2, orig[0] / 2, orig[1], orig[0]], atol=1e-3)


@pytest.mark.parametrize("retina", [False, True], ids=["default", "retina"])
@pytest.mark.parametrize("orig, size", SHAPES + [((333, 517), 640)])
def test_masks_of_thin_boxes_on_each_image_edge(orig, size, retina):
    """A box one source pixel high (or wide) along each edge of the image. Before the fix, a
    retina mask of a box on the top row of a 333x517 photo raised IndexError: the window of
    prototype rows stopped at the first row while the bilinear taps read the second (weight 0)."""
    lb, protos, coefs, _, _ = _case(orig, size, 0)
    H, W = orig
    src = np.array([[-2, -2, W + 2, 0.6], [-2, H - 0.6, W + 2, H + 2], [-2, -2, 0.6, H + 2], [W - 0.6, -2, W + 2, H + 2],
                    [-1, -1, W * 0.3, H * 0.3], [W * 0.7, H * 0.7, W + 1, H + 1]], np.float32)
    (gx, gy), (left, top) = lb.gains, lb.pad
    in_boxes = src * np.array([gx, gy, gx, gy], np.float32) + np.array([left, top, left, top], np.float32)
    coefs = np.abs(coefs[: len(src)])  # positive logits: every mask has pixels to compare
    src_boxes = lb.to_source(in_boxes.copy())
    ref = _reference(protos, coefs, in_boxes, src_boxes, lb.input_shape, orig, retina)
    ours = process_masks(protos, False, coefs, in_boxes, src_boxes, lb, retina=retina)
    for k in range(len(src)):
        diff = int((ours.mask(k) ^ ref[k]).sum())
        assert diff == 0, f"{orig} at {size}, edge box {k}: {diff} pixels differ"
