"""COCO's polygon rasterization and RLE codecs, checked bit for bit against pycocotools."""
from __future__ import annotations

import numpy as np
import pytest

from edgeseg.eval.datasets.polygon import box_polygon, crop_to_full, polygon_mask, polygons_mask
from edgeseg.eval.datasets.rle import rle_strings, rle_to_crop

mask_util = pytest.importorskip("pycocotools.mask", reason="pycocotools (a dev dependency) is the reference")
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools on numpy 2


def _ref(polys, h, w) -> np.ndarray:
    rles = mask_util.frPyObjects([np.asarray(p, float).ravel().tolist() for p in polys], h, w)
    return mask_util.decode(mask_util.merge(rles)).astype(bool)


@pytest.mark.parametrize("name,poly,h,w", [
    ("triangle", [[2, 2], [17, 4], [8, 13]], 16, 20),
    ("integer square", [[0, 0], [10, 0], [10, 10], [0, 10]], 12, 12),
    ("half-pixel square", [[0.5, 0.5], [9.5, 0.5], [9.5, 9.5], [0.5, 9.5]], 12, 12),
    ("touching the image border", [[0, 0], [20, 0], [20, 16], [0, 16]], 16, 20),
    ("outside the image", [[-5, -3], [25, 2], [30, 25], [-2, 18]], 16, 20),
    ("self-intersecting bow tie", [[0, 0], [12, 10], [12, 0], [0, 10]], 12, 14),
    ("repeated vertex", [[1, 1], [1, 1], [9, 2], [5, 9]], 12, 12),
    ("thin sliver", [[0, 5], [19, 5.3], [19, 5.6]], 12, 20),
    ("tiny", [[3.2, 3.2], [3.6, 3.3], [3.4, 3.7]], 8, 8),
    ("1x1 image", [[0, 0], [1, 0], [1, 1]], 1, 1),
])
def test_polygon_equals_pycocotools(name: str, poly, h: int, w: int) -> None:
    got = crop_to_full(polygon_mask(np.array(poly, float), h, w), h, w)
    np.testing.assert_array_equal(got, _ref([poly], h, w), err_msg=name)


def test_random_polygons_and_multi_part_objects() -> None:
    rng = np.random.default_rng(1)
    for i in range(400):
        h, w = (int(v) for v in rng.integers(3, 90, 2))
        k = int(rng.integers(3, 15))
        poly = rng.uniform(-4, max(h, w) + 4, (k, 2))
        if i % 2:
            poly = np.round(poly * 4) / 4  # many points exactly on pixel and half-pixel lines
        np.testing.assert_array_equal(crop_to_full(polygon_mask(poly, h, w), h, w), _ref([poly], h, w))
    for _ in range(100):
        parts = [rng.uniform(0, 60, (int(rng.integers(3, 8)), 2)) for _ in range(int(rng.integers(2, 4)))]
        np.testing.assert_array_equal(crop_to_full(polygons_mask(parts, 50, 60), 50, 60), _ref(parts, 50, 60))


def test_crops_are_tight() -> None:
    crop, x0, y0 = polygon_mask(np.array([[10.0, 20.0], [30.0, 20.0], [30.0, 25.0]]), 100, 100)
    assert crop[:, 0].any() and crop[:, -1].any() and crop[0].any() and crop[-1].any()
    assert 9 <= x0 <= 13 and 19 <= y0 <= 21
    empty, _, _ = polygon_mask(np.array([[200.0, 200.0], [210.0, 200.0], [210.0, 210.0]]), 50, 50)
    assert empty.size == 0


def test_box_polygon_is_cocos_box_rasterization() -> None:
    box = [3.3, 2.6, 10.2, 7.7]
    got = crop_to_full(polygon_mask(box_polygon(box), 20, 20), 20, 20)
    ref = mask_util.decode(mask_util.frPyObjects(np.array([box]), 20, 20)[0]).astype(bool)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("seed", range(4))
def test_rle_codecs_equal_pycocotools(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(1, 40, 2))
    crops, offsets, fulls = [], [], []
    for _ in range(int(rng.integers(1, 30))):
        ch, cw = int(rng.integers(0, h + 1)), int(rng.integers(0, w + 1))
        c = rng.random((ch, cw)) < rng.random()
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        full = np.zeros((h, w), np.uint8)
        full[y0: y0 + ch, x0: x0 + cw] = c
        crops.append(c), offsets.append((x0, y0)), fulls.append(full)
    ref = [mask_util.encode(np.asfortranarray(f)) for f in fulls]
    assert rle_strings(crops, np.array(offsets), h, w) == [r["counts"].decode() for r in ref]
    for r, f in zip(ref, fulls):
        rle = {"size": [h, w], "counts": r["counts"].decode()}
        np.testing.assert_array_equal(crop_to_full(rle_to_crop(rle, h, w), h, w), f.astype(bool))
