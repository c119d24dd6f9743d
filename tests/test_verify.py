"""edgeseg verify: matching and thresholds on constructed results, and end to end on real models."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeseg.cli import main
from edgeseg.errors import InputError
from edgeseg.masks import Masks
from edgeseg.results import Results
from edgeseg.eval.verify import THRESHOLDS, compare, list_images, match_detections

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
MODELS = ASSETS / "models"
BUS = ASSETS / "images" / "bus.jpg"
NAMES = {0: "person", 1: "car"}
H, W = 200, 300


def _res(dets):
    """Results from (class, score, (x0, y0, x1, y1)) with box-shaped masks."""
    boxes = np.array([d[2] for d in dets], np.float32).reshape(-1, 4)
    crops, offsets = [], []
    for x0, y0, x1, y1 in boxes.astype(int):
        crops.append(np.ones((y1 - y0, x1 - x0), bool))
        offsets.append((x0, y0))
    masks = Masks(crops, np.array(offsets, np.int32).reshape(-1, 2), (H, W))
    return Results(boxes, [d[1] for d in dets], [d[0] for d in dets], NAMES, (H, W), masks=masks)


REF = [(0, 0.9, (10, 10, 110, 150)), (1, 0.6, (150, 50, 290, 120))]

CASES = [
    # name, candidate, precision, passes, failure text
    ("identical", REF, "fp32", True, None),
    ("reordered", REF[::-1], "fp32", True, None),
    ("half-pixel shift", [(0, 0.9, (10.5, 10, 110.5, 150)), REF[1]], "fp32", True, None),
    ("two-pixel shift", [(0, 0.9, (12, 10, 112, 150)), REF[1]], "fp32", False, "box error 2.00 px > 1.00"),
    ("two-pixel shift fp16", [(0, 0.9, (10, 12, 110, 152)), REF[1]], "fp16", True, None),
    ("score drift", [(0, 0.88, REF[0][2]), REF[1]], "fp32", False, "score error"),
    ("missing", REF[:1], "fp32", False, "1 reference detection(s) missing"),
    ("extra", REF + [(0, 0.7, (200, 150, 250, 190))], "fp32", False, "1 extra candidate detection(s)"),
    ("borderline extra", REF + [(0, 0.252, (200, 150, 250, 190))], "fp32", True, None),
    ("wrong class", [(1, 0.9, REF[0][2]), REF[1]], "fp32", False, "missing"),
    ("int8 box 5%", [(0, 0.9, (16, 10, 116, 150)), REF[1]], "int8", True, None),
]


@pytest.mark.parametrize("name,cand,precision,passes,failure", CASES, ids=[c[0] for c in CASES])
def test_compare(name, cand, precision, passes, failure):
    rep = compare(_res(REF), _res(cand), THRESHOLDS[precision], conf=0.25, image=name)
    assert rep.passed is passes, rep.failures
    if failure:
        assert any(failure in f for f in rep.failures), rep.failures


def test_matching_is_by_class_then_iou():
    ref = _res(REF)
    cand = _res([(1, 0.6, (150, 50, 290, 120)), (0, 0.5, (10, 10, 110, 150))])
    assert sorted(match_detections(ref, cand)) == [(0, 1), (1, 0)]
    assert match_detections(ref, _res([(1, 0.9, REF[0][2])])) == []


def test_mask_disagreement_fails_even_with_equal_boxes():
    cand = _res(REF)
    cand.masks.crops[0][:, 50:] = False  # the right half of the person's mask is gone
    rep = compare(_res(REF), cand, THRESHOLDS["int8"], conf=0.25)
    assert rep.max_box_error == 0.0 and rep.min_mask_iou == pytest.approx(0.5)
    assert rep.failures == ["mask IoU 0.5000 < 0.85"]


def test_mask_iou_from_crops():
    rep = compare(_res(REF), _res([(0, 0.9, (10, 10, 110, 148)), REF[1]]), THRESHOLDS["fp32"], conf=0.25)
    assert rep.min_mask_iou == pytest.approx(138 / 140)
    assert rep.matched == 2 and rep.max_box_error == pytest.approx(2.0)


def test_list_images(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "b.PNG").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in list_images([tmp_path])] == ["a.jpg", "b.PNG"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no images"):
        list_images([tmp_path / "empty"])
    with pytest.raises(InputError, match="not found"):
        list_images([tmp_path / "nope.jpg"])


def _need(*paths: Path) -> None:
    for p in paths:
        if not p.exists():
            pytest.skip(f"test asset {p} not found; see ../shared/assets/README.md")


def test_int8_export_fails_fp32_limits_and_passes_int8_limits():
    """The int8 (dynamic-quantized) ONNX of the same COCO weights, checked against the .pt."""
    pytest.importorskip("torch", reason="the .pt reference needs the convert extra")
    pytest.importorskip("onnxruntime")
    pt, onnx = MODELS / "yolov8n-seg-coco.pt", MODELS / "yolov8n-seg-320-int8dyn.onnx"
    _need(pt, onnx, BUS)
    runner = CliRunner()
    r = runner.invoke(main, ["verify", str(pt), str(onnx), "--images", str(BUS), "--json"])
    assert r.exit_code == 1
    rep = json.loads(r.output)
    assert not rep["passed"] and rep["precision"] == "fp32"
    bus = rep["images"][0]
    assert bus["matched"] == 4 and bus["same_input"] is True
    assert any("box error" in f for f in bus["failures"])
    r = runner.invoke(main, ["verify", str(pt), str(onnx), "--images", str(BUS), "--precision", "int8"])
    assert r.exit_code == 0, r.output
    assert "PASS: 1/1 images within int8 limits" in r.output


def test_a_different_model_fails_with_exit_code_1():
    pytest.importorskip("torch", reason="the .pt models need the convert extra")
    pt, other = MODELS / "yolov8n-seg-coco.pt", MODELS / "yolov8s-seg-random.pt"
    _need(pt, other, BUS)
    r = CliRunner().invoke(main, ["verify", str(pt), str(other), "--images", str(BUS), "--imgsz", "256"])
    assert r.exit_code == 1
    assert "reference detection(s) missing" in r.output and "FAIL: 0/1 images" in r.output


def test_cli_errors_are_clean(tmp_path):
    r = CliRunner().invoke(main, ["verify", "a.onnx", "b.onnx"])
    assert r.exit_code == 2 and "--images" in r.output
    r = CliRunner().invoke(main, ["verify", str(tmp_path / "a.onnx"), str(tmp_path / "b.onnx"), "--images", str(tmp_path)])
    assert r.exit_code == 1 and "Traceback" not in r.output


def test_cli_help_states_the_limits_verify_applies():
    """The help said int8 boxes may be off by 8 px while verify allowed 4 px (or 5% of the box)."""
    from click.testing import CliRunner

    from edgeseg.cli import main
    from edgeseg.eval.verify import THRESHOLDS

    text = " ".join(CliRunner().invoke(main, ["verify", "--help"]).output.split())
    for name, t in THRESHOLDS.items():
        line = f"{name}: box <= {t.box_px:g} px"
        line += f" or {t.box_rel:.0%} of the box" if t.box_rel else ""
        assert f"{line}, score <= " in text, (name, text)
        assert f"mask IoU >= {t.mask_iou:g}" in text
