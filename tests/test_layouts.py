"""Every output layout decodes to the same detections.

A small test backend (the "mock transport" of STYLE.md) runs the real int8 ONNX model through
ONNX Runtime and re-packs its real outputs into each layout edgeseg understands: transposed,
normalized boxes, NHWC protos, shuffled output order, the split layout (float and int8 with
per-tensor scales), NMS-inside, and detection-only. Decoding must not depend on output position.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest

from _assets import MODELS, image_path, require_assets
from edgeseg import Runtime
from edgeseg import backend as backend_mod
from edgeseg.backend import Backend, TensorSpec, quantize, register
from edgeseg.errors import LayoutError

ONNX = MODELS / "yolov8n-seg-320-int8dyn.onnx"
NC, NM, N = 80, 32, 2100


def _quant_spec(name: str, a: np.ndarray) -> TensorSpec:
    scale = float(np.abs(a).max()) / 127.0 or 1.0
    return TensorSpec(name, a.shape, np.dtype(np.int8), scale, 0)


def repack(kind: str, pred: np.ndarray, protos: np.ndarray, imgsz: int) -> Dict[str, Any]:
    """Real outputs (1,116,N) + (1,32,80,80) re-laid into ``kind``; returns outputs, specs, metadata."""
    p = pred[0]  # (116, N)
    out: Dict[str, np.ndarray]
    meta: Dict[str, Any] = {}
    if kind == "raw":
        out = {"output0": pred, "output1": protos}
    elif kind == "transposed":
        out = {"output0": np.ascontiguousarray(pred.transpose(0, 2, 1)), "output1": protos}
    elif kind == "normalized-nhwc-reordered":  # the TFLite quirks, outputs listed protos first
        q = pred.copy()
        q[0, :4] /= imgsz
        out = {"Identity_1": np.ascontiguousarray(protos.transpose(0, 2, 3, 1)), "Identity": q}
    elif kind in ("split", "split-int8", "split-named-by-metadata"):
        names = {"split-named-by-metadata": ("t0", "t1", "t2")}.get(kind, ("boxes", "scores", "mask_coefs"))
        out = {
            names[2]: np.ascontiguousarray(p[4 + NC:].T[None]),
            "protos": protos,
            names[0]: np.ascontiguousarray(p[:4].T[None]),
            names[1]: np.ascontiguousarray(p[4: 4 + NC].T[None]),
        }
        meta["output_layout"] = "split"
        if kind == "split-named-by-metadata":
            meta["split_outputs"] = json.dumps({"boxes": "t0", "scores": "t1", "coefs": "t2"})
    elif kind == "nms":  # NMS inside the model (Ultralytics nms=True / YOLO26 style): (1, 300, 6 + nm)
        from edgeseg.postprocess import nms

        scores, cls = p[4: 4 + NC].max(0), p[4: 4 + NC].argmax(0)
        xyxy = np.concatenate([p[:2] - p[2:4] / 2, p[:2] + p[2:4] / 2]).T
        cand = np.flatnonzero(scores > 0.01)
        keep = cand[nms(xyxy[cand], scores[cand], cls[cand], 0.7, 300)]
        rows = np.zeros((300, 6 + NM), np.float32)
        rows[: len(keep)] = np.concatenate([xyxy[keep], scores[keep, None], cls[keep, None], p[4 + NC:, keep].T], 1)
        out = {"output0": rows[None], "output1": protos}
    elif kind == "nms-padded":  # an onnx2tf-style NMS-inside export: unused rows repeat a zero-width box
        rows = repack("nms", pred, protos, imgsz)["outputs"]["output0"][0].copy()
        used = int(np.count_nonzero(rows[:, 4]))
        rows[used:] = 0
        rows[used:, :4] = [37.0, 50.0, 37.0, 90.0]  # x1 == x2
        rows[used:, 4] = 0.96
        out = {"output0": rows[None], "output1": protos}
    elif kind == "raw-int8":  # full-integer export, one int8 tensor for boxes (normalized) + scores + coefs
        q = pred.copy()
        q[0, :4] /= imgsz
        out = {"output0": q, "output1": protos}
    elif kind == "detect-only":
        out = {"output0": np.ascontiguousarray(pred[:, : 4 + NC])}
    else:
        raise ValueError(kind)
    specs = {n: TensorSpec(n, a.shape, np.dtype(np.float32)) for n, a in out.items()}
    if kind in ("split-int8", "raw-int8"):
        specs = {n: _quant_spec(n, a) for n, a in out.items()}
    return {"outputs": out, "specs": specs, "meta": meta}


class RelayoutBackend(Backend):
    """Runs the real ONNX model, then re-packs its outputs as the ``.relayout`` file says."""

    name = "relayout-test"
    format = "relayout"
    suffixes = (".relayout",)
    requires = ("onnxruntime",)
    extra = "onnx"
    priority = 90

    def __init__(self, model: Path, *, threads=None, **options: Any) -> None:
        from edgeseg.runtimes.onnxruntime import OnnxRuntimeBackend

        self.kind = json.loads(model.read_text())["kind"]
        self.inner = OnnxRuntimeBackend(ONNX, threads=threads)
        self.inputs = self.inner.inputs
        # quantization scales calibrated once, on the real test image
        with Runtime(ONNX) as rt:
            feeds, _ = rt.preprocess(__import__("cv2").imread(str(image_path("bus"))))
        sample = repack(self.kind, *self._raw(feeds), 320)
        self.specs = sample["specs"]
        self.outputs = list(self.specs.values())
        self.metadata = {**self.inner.metadata, **sample["meta"]}
        if self.kind == "detect-only":
            self.metadata["task"] = "detect"

    def _raw(self, feeds):
        o = self.inner.run(feeds)
        return o["output0"], o["output1"]

    def run(self, feeds):
        out = repack(self.kind, *self._raw(feeds), 320)["outputs"]
        return {n: quantize(a, self.specs[n]) if self.specs[n].quantized else a for n, a in out.items()}


@pytest.fixture(scope="module")
def relayout():
    require_assets(ONNX)
    register(RelayoutBackend)
    yield
    backend_mod._REGISTRY.pop(RelayoutBackend.name, None)


@pytest.fixture(scope="module")
def expected():
    require_assets(ONNX)
    with Runtime(ONNX) as rt:
        return rt(image_path("bus"))


@pytest.mark.parametrize("kind, layout", [
    ("raw", "raw"),
    ("transposed", "raw"),
    ("normalized-nhwc-reordered", "raw"),
    ("split", "split"),
    ("split-named-by-metadata", "split"),
    ("split-int8", "split"),
    ("nms", "nms"),
    ("nms-padded", "nms"),
])
def test_layouts_decode_identically(relayout, expected, tmp_path, kind, layout):
    f = tmp_path / f"{kind}.relayout"
    f.write_text(json.dumps({"kind": kind}))
    with Runtime(f) as rt:
        assert rt.layout.kind == layout
        res = rt(image_path("bus"))
    assert res.class_ids.tolist() == expected.class_ids.tolist()
    # int8: a box coordinate is off by up to 3/4 of a quantization step (320/127 input px), in source px
    tol = 0.75 * (320 / 127) / (320 / 1080) if kind == "split-int8" else 3e-3
    np.testing.assert_allclose(res.boxes, expected.boxes, atol=tol)
    np.testing.assert_allclose(res.scores, expected.scores, atol=0.01 if kind == "split-int8" else 1e-5)
    for i in range(len(res)):
        a, b = res.masks.mask(i), expected.masks.mask(i)
        assert (a & b).sum() / (a | b).sum() > (0.97 if kind == "split-int8" else 0.999)


def test_detection_only_model_gives_boxes_without_masks(relayout, expected, tmp_path):
    f = tmp_path / "det.relayout"
    f.write_text(json.dumps({"kind": "detect-only"}))
    with Runtime(f) as rt:
        assert rt.layout.nm == 0 and rt.layout.protos is None
        assert rt.info["task"] == "detect"
        res = rt(image_path("bus"))
    assert res.masks is None
    np.testing.assert_allclose(res.boxes, expected.boxes, atol=1e-3)
    assert res.to_dict()["detections"][0].get("mask_rle") is None


def test_names_must_fit_the_class_count(relayout, tmp_path):
    f = tmp_path / "raw.relayout"
    f.write_text(json.dumps({"kind": "raw"}))
    with pytest.raises(LayoutError, match="names 3 classes"):
        Runtime(f, names=["a", "b", "c"])


def test_int8_outputs_decode_in_the_integer_domain_exactly(relayout, tmp_path):
    """Thresholding int8 scores in quantized units and dequantizing only candidate rows and proto
    windows gives exactly what dequantizing every output first gives."""
    from edgeseg.backend import dequantize
    from edgeseg.postprocess import Decoder

    f = tmp_path / "q.relayout"
    f.write_text(json.dumps({"kind": "raw-int8"}))
    img = __import__("cv2").imread(str(image_path("bus")))
    with Runtime(f, conf=0.05) as rt:
        feeds, lb = rt.preprocess(img)
        raw = rt.infer(feeds)
        assert all(a.dtype == np.int8 for a in raw.values())
        res = rt.postprocess(raw, lb)
        layout = rt.layout
        specs = {s.name: s for s in rt.backend.outputs}
    floats = {n: dequantize(a, specs[n]) for n, a in raw.items()}
    ref = Decoder(layout, conf=0.05, iou=0.7, max_det=300)(floats, lb)  # no specs: float outputs
    assert len(res) == len(ref.scores) > 0
    np.testing.assert_array_equal(res.boxes, ref.boxes)
    np.testing.assert_array_equal(res.scores, ref.scores)
    np.testing.assert_array_equal(res.class_ids, ref.class_ids)
    assert [c.tobytes() for c in res.masks.crops] == [c.tobytes() for c in ref.masks.crops]
    np.testing.assert_array_equal(res.masks.offsets, ref.masks.offsets)


def test_collapsed_int8_scores_are_reported(relayout, tmp_path, caplog):
    """One int8 tensor mixing coefficients and 0-1 scores leaves a handful of score levels: the
    runtime says so (in info and once on the first prediction) and points to the split export."""
    f = tmp_path / "q.relayout"
    f.write_text(json.dumps({"kind": "raw-int8"}))
    with Runtime(f) as rt:
        assert len(rt.warnings) == 1 and "edgeseg convert --int8" in rt.warnings[0]
        assert "levels between 0 and 1" in rt.warnings[0]
        with caplog.at_level("WARNING", logger="edgeseg.runtime"):
            rt(image_path("bus"))
            rt(image_path("bus"))
        assert sum("collapsed its scores" in r.getMessage() for r in caplog.records) == 1
        assert rt.info["warnings"] == rt.warnings
    g = tmp_path / "s.relayout"
    g.write_text(json.dumps({"kind": "split-int8"}))
    with Runtime(g) as rt:  # a separate scores tensor: 127 levels, fine
        assert rt.warnings == []
