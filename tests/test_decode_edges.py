"""Decoding at the edges: boxes clipped to the image, corrupted (non-finite) outputs, very thin
images, and models whose int8 scores cannot work."""
from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from _assets import MODELS, image_path, require_assets
from edgeseg import Runtime
from edgeseg.layout import OutputLayout
from edgeseg.postprocess import Decoder
from edgeseg.preprocess import letterbox_geometry

ONNX = MODELS / "yolov8n-seg-320-int8dyn.onnx"
NC, NM = 3, 4


def _raw(boxes_xywh, scores, coefs=None):
    """A (1, 4+NC+NM, N) raw output in input pixels, with (1, NM, 80, 80) protos that are positive
    everywhere (every mask fills its box)."""
    n = len(boxes_xywh)
    p = np.zeros((1, 4 + NC + NM, n), np.float32)
    p[0, :4] = np.asarray(boxes_xywh, np.float32).T
    p[0, 4: 4 + NC] = np.asarray(scores, np.float32).T
    p[0, 4 + NC:] = 1.0 if coefs is None else np.asarray(coefs, np.float32).T
    return {"pred": p, "protos": np.ones((1, NM, 80, 80), np.float32)}


LAYOUT = dict(kind="raw", nc=NC, nm=NM, pred="pred", protos="protos", boxes_normalized=False)


@pytest.mark.parametrize("edge, xywh", [
    ("left", [5, 160, 60, 40]), ("top", [160, 45, 40, 60]),
    ("right", [315, 160, 60, 40]), ("bottom", [160, 275, 40, 60]),
])
def test_boxes_and_masks_stay_inside_the_image_at_every_edge(edge, xywh):
    """An object running off each edge of a 400x300 image (input 320x320, 40 px of padding above
    and below): its box is clipped to the image, in Results, JSON and the plot."""
    from edgeseg.results import Results

    lb = letterbox_geometry((300, 400), (320, 320))
    dec = Decoder(OutputLayout(**LAYOUT), conf=0.25, iou=0.7, max_det=300)
    det = dec(_raw([xywh], [[0.9, 0, 0]]), lb)
    assert len(det.scores) == 1
    x1, y1, x2, y2 = det.boxes[0]
    assert 0 <= x1 < x2 <= 400 and 0 <= y1 < y2 <= 300
    touched = {"left": x1 == 0, "top": y1 == 0, "right": x2 == 400, "bottom": y2 == 300}
    assert touched[edge], det.boxes[0]
    res = Results(det.boxes, det.scores, det.class_ids, {0: "a"}, (300, 400), masks=det.masks,
                  image=np.zeros((300, 400, 3), np.uint8))
    box = res.to_dict()["detections"][0]["box"]
    assert 0 <= box[0] and 0 <= box[1] and box[2] <= 400 and box[3] <= 300
    m = res.masks.mask(0)
    assert m.any() and m.shape == (300, 400)
    res.plot()


def test_a_real_object_at_the_top_edge_is_clipped():
    """zidane.jpg without its top 60 rows: the model puts a box 0.8 px above the image."""
    require_assets(ONNX)
    img = np.ascontiguousarray(cv2.imread(str(image_path("zidane")))[60:])
    with Runtime(ONNX) as rt:
        res = rt(img)
    h, w = img.shape[:2]
    assert len(res) >= 2
    assert res.boxes[:, 1].min() == 0.0  # it touches the top edge, and no more
    assert (res.boxes >= 0).all() and (res.boxes[:, 0::2] <= w).all() and (res.boxes[:, 1::2] <= h).all()


def test_non_finite_rows_are_dropped_with_one_warning(caplog):
    """Corrupted weights give NaN/inf outputs: those rows go, the rest decodes, one warning."""
    lb = letterbox_geometry((320, 320), (320, 320))
    dec = Decoder(OutputLayout(**LAYOUT), conf=0.25, iou=0.7, max_det=300)
    out = _raw([[50, 50, 40, 40], [np.nan, 100, 40, 40], [200, 200, np.inf, 30], [250, 80, 30, 30],
                [120, 250, 30, 30]],
               [[0.9, 0, 0], [0.9, 0, 0], [0, 0.8, 0], [0, 0, np.nan], [0, 0.7, 0]],
               coefs=[[1] * NM, [1] * NM, [1] * NM, [1] * NM, [np.nan] * NM])
    with caplog.at_level(logging.WARNING, logger="edgeseg.runtime"):
        det = dec(out, lb)
        det2 = dec(out, lb)
    assert len(det.scores) == 1 and det.class_ids.tolist() == [0]
    np.testing.assert_allclose(det.boxes[0], [30, 30, 70, 70])
    assert len(det2.scores) == 1
    assert sum("non-finite" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("shape", [(1, 5000), (5000, 1), (2, 30000), (30000, 2), (1, 1)])
def test_very_thin_images_are_letterboxed(shape):
    require_assets(ONNX)
    img = np.random.default_rng(0).integers(0, 256, shape + (3,), dtype=np.uint8)
    lb = letterbox_geometry(shape, (320, 320))
    assert min(lb.resized) >= 1
    with Runtime(ONNX, conf=0.001) as rt:
        res = rt(img)
    h, w = shape
    assert (res.boxes >= 0).all() and (res.boxes[:, 0::2] <= w).all() and (res.boxes[:, 1::2] <= h).all()
    if len(res):
        assert res.masks.dense().shape == (len(res), h, w)


def test_the_full_int8_asset_says_its_scores_collapsed(caplog):
    path = MODELS / "yolov8n-seg-640-fullint8.tflite"
    require_assets(path)
    with Runtime(path) as rt:
        assert len(rt.warnings) == 1 and "PartitionedCall:0" in rt.warnings[0]
        with caplog.at_level(logging.WARNING, logger="edgeseg.runtime"):
            rt(image_path("bus"))
            rt(image_path("bus"))
    assert sum("edgeseg convert --int8" in r.getMessage() for r in caplog.records) == 1
    with Runtime(MODELS / "yolov8n-seg-640-int8w.tflite") as rt:  # float outputs: nothing to say
        assert rt.warnings == []
