"""Letterbox arithmetic, NMS implementations, and the int8 input path."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseg.backend import TensorSpec
from edgeseg.postprocess import nms
from edgeseg.preprocess import Preprocessor, letterbox_geometry


@pytest.mark.parametrize("orig, new, auto, resized, pad, input_shape", [
    ((1080, 810), (640, 640), False, (640, 480), (80, 0), (640, 640)),
    ((1080, 810), (640, 640), True, (640, 480), (0, 0), (640, 480)),
    ((720, 1280), (640, 640), False, (360, 640), (0, 140), (640, 640)),
    ((720, 1280), (640, 640), True, (360, 640), (0, 12), (384, 640)),
    ((500, 381), (320, 320), False, (320, 244), (38, 0), (320, 320)),
    ((100, 100), (320, 480), False, (320, 320), (80, 0), (320, 480)),
])
def test_letterbox_matches_ultralytics_arithmetic(orig, new, auto, resized, pad, input_shape):
    lb = letterbox_geometry(orig, new, 32, auto=auto)
    assert lb.resized == resized and lb.pad == pad and lb.input_shape == input_shape
    # a box covering the whole resized image maps back onto the whole source image
    box = np.array([[pad[0], pad[1], pad[0] + resized[1], pad[1] + resized[0]]], np.float32)
    np.testing.assert_allclose(lb.to_source(box)[0], [0, 0, orig[1], orig[0]], atol=1.0)


@pytest.mark.parametrize("seed", range(10))
def test_numpy_and_opencv_nms_keep_the_same_boxes(seed):
    rng = np.random.default_rng(seed)
    n = 400
    xy = rng.uniform(0, 600, (n, 2)).astype(np.float32)
    wh = rng.uniform(5, 120, (n, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + wh], 1)
    scores = rng.permutation(n).astype(np.float32) / n + 0.001  # distinct scores: no tie ordering
    classes = rng.integers(0, 4, n)
    a = nms(boxes, scores, classes, 0.5, 300, impl="numpy")
    b = nms(boxes, scores, classes, 0.5, 300, impl="opencv")
    assert a.tolist() == b.tolist()
    # no two kept boxes of one class overlap by more than the threshold
    kept = boxes[a]
    for c in range(4):
        k = kept[classes[a] == c]
        for i in range(len(k)):
            w = np.clip(np.minimum(k[i, 2], k[i + 1:, 2]) - np.maximum(k[i, 0], k[i + 1:, 0]), 0, None)
            h = np.clip(np.minimum(k[i, 3], k[i + 1:, 3]) - np.maximum(k[i, 1], k[i + 1:, 1]), 0, None)
            inter = w * h
            area = (k[:, 2] - k[:, 0]) * (k[:, 3] - k[:, 1])
            assert (inter / (area[i] + area[i + 1:] - inter) <= 0.5 + 1e-6).all()


def test_quantized_input_uses_scale_and_zero_point():
    spec = TensorSpec("images", (1, 64, 64, 3), np.dtype(np.int8), scale=1 / 255, zero_point=-128)
    img = np.zeros((64, 64, 3), np.uint8)
    img[:, :, 2] = 255  # red in BGR
    x, lb = Preprocessor(spec, (64, 64))(img)
    assert x.dtype == np.int8 and x.shape == (1, 64, 64, 3)
    assert (x[0, :, :, 0] == 127).all() and (x[0, :, :, 1] == -128).all()


def test_padding_value_in_float_tensors():
    spec = TensorSpec("images", (1, 3, 64, 64), np.dtype(np.float32))
    x, lb = Preprocessor(spec, (64, 64))(np.zeros((32, 64, 3), np.uint8))
    assert lb.pad == (0, 16)
    np.testing.assert_allclose(x[0, :, :16], 114 / 255)
    assert (x[0, :, 16:48] == 0).all()


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_dequantize_by_table_equals_the_formula(dtype):
    """Large 8-bit tensors (int8 prototypes) are dequantized through a 256-entry table: the very
    float32 values of ``(q - zero_point) * scale``, for whole tensors, window views and small rows."""
    from edgeseg.backend import dequantize

    info = np.iinfo(dtype)
    rng = np.random.default_rng(0)
    q = rng.integers(info.min, info.max + 1, (160, 160, 32)).astype(dtype)
    spec = TensorSpec("protos", q.shape, np.dtype(dtype), 0.0231, -7 if dtype == np.int8 else 121)
    for a in (q, q[5:90, 7:150], q[3, 4], q.reshape(-1)[:10]):
        ref = (a.astype(np.float32) - np.float32(spec.zero_point)) * np.float32(spec.scale)
        out = dequantize(a, spec)
        assert out.dtype == np.float32 and out.shape == a.shape
        np.testing.assert_array_equal(out, ref)
