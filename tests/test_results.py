"""Masks views (dense, polygons, COCO RLE) and the Results type."""
from __future__ import annotations

import json

import numpy as np
import pytest

from _assets import MODELS, image_path, require_assets
from edgeseg import Masks, Results, Runtime
from edgeseg.errors import InputError
from edgeseg.masks import rle_decode, rle_from_string, rle_to_string


def random_masks(seed: int, n: int = 5, shape=(37, 53)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dense = np.zeros((n,) + shape, bool)
    for m in dense:
        x0, y0 = rng.integers(0, shape[1]), rng.integers(0, shape[0])
        x1, y1 = rng.integers(x0, shape[1] + 1), rng.integers(y0, shape[0] + 1)
        m[y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) > rng.random()
    return dense


@pytest.mark.parametrize("seed", range(20))
def test_rle_matches_pycocotools(seed):
    mask_util = pytest.importorskip("pycocotools.mask", reason="pycocotools is a dev dependency")
    dense = random_masks(seed)
    m = Masks.from_dense(dense)
    assert (m.dense() == dense).all()
    for i, (d, r, rc) in enumerate(zip(dense, m.rle(), m.rle(compressed=True))):
        ref = mask_util.encode(np.asfortranarray(d.astype(np.uint8)))
        assert rc["counts"] == ref["counts"].decode()
        assert rle_from_string(ref["counts"]) == r["counts"]
        assert rle_to_string(r["counts"]) == rc["counts"]
        assert (rle_decode(r) == d).all() and (rle_decode(rc) == d).all()
        assert m.areas()[i] == d.sum() == mask_util.area(ref)


def test_polygons_trace_the_mask():
    import cv2

    dense = np.zeros((1, 60, 80), bool)
    cv2.circle(dense[0].view(np.uint8), (40, 30), 15, 1, -1)
    m = Masks.from_dense(dense)
    (poly,), = m.polygons()
    redrawn = np.zeros((60, 80), np.uint8)
    cv2.fillPoly(redrawn, [poly.round().astype(np.int32)], 1)
    iou = (redrawn.astype(bool) & dense[0]).sum() / (redrawn.astype(bool) | dense[0]).sum()
    assert iou > 0.95
    np.testing.assert_array_equal(m.boxes()[0], [25, 15, 56, 46])


def test_masks_reject_crops_outside_the_image():
    with pytest.raises(InputError, match="exceeds"):
        Masks([np.ones((5, 5), bool)], [[8, 0]], (10, 10))


@pytest.fixture(scope="module")
def bus():
    path = MODELS / "yolov8n-seg-320-int8dyn.onnx"
    require_assets(path)
    with Runtime(path) as rt:
        return rt(image_path("bus"))


def test_boolean_and_integer_indexing(bus):
    people = bus[bus.class_ids == 0]
    assert len(people) == 3 and people.class_names == ["person"] * 3
    assert len(people.masks) == 3 and people.names is bus.names
    one = bus[0]
    assert len(one) == 1 and one.class_names == ["bus"]
    np.testing.assert_array_equal(bus[bus.scores > 0.8].scores, bus.scores[bus.scores > 0.8])
    assert len(bus[bus.scores > 2]) == 0 and len(bus[bus.scores > 2].masks) == 0


def test_results_validate_their_fields():
    with pytest.raises(InputError, match="one row per detection"):
        Results(np.zeros((2, 4)), np.zeros(3), np.zeros(2), {}, (10, 10))


def test_to_dict_json_and_plot(bus):
    d = json.loads(bus.to_json())
    assert d["image_size"] == [1080, 810] and len(d["detections"]) == 4
    assert d["detections"][0]["class_name"] == "bus"
    dense = bus.masks.dense()
    assert dense.shape == (4, 1080, 810)
    assert (rle_decode(d["detections"][1]["mask_rle"]) == dense[1]).all()
    poly = bus.to_dict(masks="polygon")["detections"][0]["polygons"]
    assert len(poly) >= 1
    img = bus.plot()
    assert img.shape == bus.image.shape and img.dtype == np.uint8
    assert (img != bus.image).any(axis=2).mean() > 0.2  # masks and boxes were drawn
    assert "1 bus, 3 person" in repr(bus)


def test_masks_are_kept_per_box_not_full_frame(bus):
    total = sum(c.size for c in bus.masks.crops)
    assert total < 0.75 * len(bus) * 1080 * 810
    for c, (x0, y0), b in zip(bus.masks.crops, bus.masks.offsets, bus.boxes):
        assert x0 >= b[0] - 8 and y0 >= b[1] - 8 and x0 + c.shape[1] <= b[2] + 8 and y0 + c.shape[0] <= b[3] + 8


def test_frame_fields_are_fields_kept_by_indexing():
    res = Results([[0, 0, 4, 4], [1, 1, 3, 3]], [0.9, 0.2], [0, 1], {0: "a", 1: "b"}, (8, 8),
                  path="cam", frame_index=np.int64(41), frame_time=12.5)
    assert res.frame_index == 41 and type(res.frame_index) is int and res.frame_time == 12.5
    for sub in (res[res.scores > 0.5], res[[1]], res[0], res[:0]):
        assert (sub.frame_index, sub.frame_time, sub.path) == (41, 12.5, "cam")
    plain = Results(np.zeros((0, 4)), [], [], {}, (8, 8))
    assert plain.frame_index is None and plain.frame_time is None
