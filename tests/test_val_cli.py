"""`edgeseg val` and `edgeseg data` as users run them, on coco8-seg (small and quick).

- the CLI prints a table, writes COCO results that pycocotools scores the same way;
- bad labels in a copy of coco8-seg are reported with file:line and the run completes;
- `data convert-coco` round-trips coco8-seg labels, and val gives identical numbers on the
  YOLO form, the COCO JSON form and the converted form;
- a `.pt` checkpoint validates too when the torch backend (convert extra) is installed.
"""
from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
from click.testing import CliRunner

from _assets import ASSETS, MODELS, require_assets
from edgeseg.cli import main

COCO8 = ASSETS / "datasets" / "coco8-seg.yaml"
ONNX = MODELS / "yolov8n-seg-320-int8dyn.onnx"
PT = MODELS / "yolov8n-seg-coco.pt"

pytest.importorskip("onnxruntime", reason="needs the onnx extra")


def _pycoco(gt: Dict[str, Any], results: List[Dict[str, Any]], iou_type: str) -> np.ndarray:
    pytest.importorskip("pycocotools", reason="pycocotools (a dev dependency) computes the reference numbers")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes([dict(r) for r in results]), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats)


@pytest.fixture(scope="module")
def rt():
    require_assets(COCO8, ONNX)
    from edgeseg import Runtime

    with Runtime(ONNX, imgsz=320) as r:
        yield r


def test_cli_val_table_json_and_results(tmp_path: Path) -> None:
    require_assets(COCO8, ONNX)
    runner = CliRunner()
    preds, gt_file = tmp_path / "preds.json", tmp_path / "gt.json"
    out = runner.invoke(main, ["val", "-m", str(ONNX), "-d", str(COCO8), "--imgsz", "320", "--save-json", str(preds)])
    assert out.exit_code == 0, out.output
    assert "mAP50-95" in out.stdout and "Speed:" in out.stdout
    assert "person" in out.stdout and "all" in out.stdout
    out = runner.invoke(main, ["val", "-m", str(ONNX), "-d", str(COCO8), "--imgsz", "320", "--no-classes", "--coco-summary"])
    assert out.exit_code == 0, out.output
    assert "person" not in out.stdout and out.stdout.count("Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all") == 2
    out = runner.invoke(main, ["val", "-m", str(ONNX), "-d", str(COCO8), "--imgsz", "320", "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    assert summary["images"] == 4 and summary["instances"] == 17
    out = runner.invoke(main, ["data", "export-coco", str(COCO8), "--out", str(gt_file)])
    assert out.exit_code == 0, out.output
    gt, results = json.loads(gt_file.read_text()), json.loads(preds.read_text())
    assert abs(summary["metrics"]["box/mAP50-95"] - _pycoco(gt, results, "bbox")[0]) < 1e-3
    assert abs(summary["metrics"]["seg/mAP50-95"] - _pycoco(gt, results, "segm")[0]) < 1e-3
    assert abs(summary["metrics"]["seg/mAP50"] - _pycoco(gt, results, "segm")[1]) < 1e-3


@pytest.mark.parametrize("args,message", [
    (["-d", "missing.yaml"], "dataset file not found"),
    (["-d", str(COCO8), "--split", "test"], "no 'test' split"),
    (["-d", "data.txt"], "expected a YOLO dataset .yaml or a COCO instances .json"),
])
def test_cli_val_user_errors_are_clean(args: List[str], message: str, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    require_assets(COCO8, ONNX)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.txt").write_text("x")
    out = CliRunner().invoke(main, ["val", "-m", str(ONNX), *args])
    assert out.exit_code == 1
    assert message in out.output and "Traceback" not in out.output


def _copy_coco8(dst: Path) -> Path:
    shutil.copytree(COCO8.parent / "coco8-seg", dst / "coco8-seg")
    shutil.copy(COCO8, dst / "coco8-seg.yaml")
    return dst / "coco8-seg.yaml"


def test_bad_labels_are_reported_with_file_and_line(tmp_path: Path, rt) -> None:
    data = _copy_coco8(tmp_path)
    labels = tmp_path / "coco8-seg" / "labels" / "val"
    bad = {
        "000000000036.txt": "0 0.1 0.1 0.2 0.2 0.3",          # odd coordinate count
        "000000000042.txt": "999 0.1 0.1 0.2 0.1 0.2 0.2",    # class out of range
        "000000000049.txt": "0 0.1 nan 0.2 0.1 0.2 0.2",      # NaN
        "000000000061.txt": "2 0.1 0.1 1.7 0.1 0.2 0.2",      # outside 0-1
    }
    lines_before = {}
    for name, line in bad.items():
        f = labels / name
        lines_before[name] = len(f.read_text().splitlines())
        f.write_text(f.read_text().rstrip("\n") + "\n" + line + "\n")
    runner = CliRunner()
    out = runner.invoke(main, ["val", "-m", str(ONNX), "-d", str(data), "--imgsz", "320"])
    assert out.exit_code == 0, out.output
    for name, n in lines_before.items():
        assert f"{labels / name}:{n + 1}:" in out.stderr, out.stderr
    assert "odd number of coordinates" in out.stderr and "class 999 is out of range" in out.stderr
    assert "NaN" in out.stderr and "normalized to 0-1" in out.stderr
    assert "4 label(s) skipped" in out.stderr
    # the good labels are all still scored, and the metrics equal a run on the clean copy
    m_bad = rt.val(data=data)
    m_good = rt.val(data=COCO8)
    assert m_bad.instances == m_good.instances == 17 and len(m_bad.issues) == 4
    assert m_bad.box.map == m_good.box.map and m_bad.seg.map == m_good.seg.map
    # `data check` lists them too, and fails for scripts
    out = runner.invoke(main, ["data", "check", str(data)])
    assert out.exit_code == 1 and "4 label(s) skipped" in out.stdout


def test_convert_coco_round_trip_and_identical_numbers(tmp_path: Path, rt) -> None:
    from edgeseg.eval.datasets import load_dataset, to_coco

    require_assets(COCO8)
    ann = tmp_path / "instances_val.json"
    ann.write_text(json.dumps(to_coco(load_dataset(COCO8))))
    images = COCO8.parent / "coco8-seg" / "images" / "val"
    runner = CliRunner()
    out = runner.invoke(main, ["data", "convert-coco", str(ann), "--images", str(images), "--out", str(tmp_path / "yolo")])
    assert out.exit_code == 0, out.output
    assert "4 images, 17 objects" in out.stdout
    new_yaml = tmp_path / "yolo" / "val.yaml"
    assert new_yaml.is_file() and sorted(p.name for p in (tmp_path / "yolo" / "images" / "val").iterdir()) == \
        sorted(p.name for p in images.iterdir())
    # the same polygons come back
    for orig in sorted((COCO8.parent / "coco8-seg" / "labels" / "val").glob("*.txt")):
        back = tmp_path / "yolo" / "labels" / "val" / orig.name
        a = [list(map(float, line.split())) for line in orig.read_text().splitlines() if line.strip()]
        b = [list(map(float, line.split())) for line in back.read_text().splitlines() if line.strip()]
        assert len(a) == len(b)
        for la, lb in zip(a, b):
            np.testing.assert_allclose(la, lb, rtol=0, atol=1e-9)
    # identical numbers on all three forms
    forms = [rt.val(data=COCO8), rt.val(data=ann, images=images), rt.val(data=new_yaml)]
    for m in forms[1:]:
        for a, b in ((forms[0].box, m.box), (forms[0].seg, m.seg)):
            assert (a.map, a.map50, a.map75) == (b.map, b.map50, b.map75)
            np.testing.assert_array_equal(a.maps, b.maps)
    # a second conversion into the same folder is refused unless --overwrite
    out = runner.invoke(main, ["data", "convert-coco", str(ann), "--images", str(images), "--out", str(tmp_path / "yolo")])
    assert out.exit_code == 1 and "--overwrite" in out.output
    out = runner.invoke(main, ["data", "convert-coco", str(ann), "--images", str(images), "--out", str(tmp_path / "yolo"),
                               "--overwrite", "--no-images"])
    assert out.exit_code == 0, out.output
    assert not (tmp_path / "yolo" / "images" / "val").exists() or not any((tmp_path / "yolo" / "images" / "val").iterdir())


def test_pt_checkpoint_validates_when_the_torch_backend_is_installed(tmp_path: Path) -> None:
    import importlib.util

    require_assets(COCO8, PT)
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed (pip install 'edgeseg[convert]')")
    try:
        spec = importlib.util.find_spec("edgeseg.converters.torch_backend")
    except ImportError:
        spec = None
    if spec is None:
        pytest.skip("edgeseg.converters.torch_backend is not there yet")
    from edgeseg.eval.datasets import load_dataset, to_coco
    from edgeseg.eval.validate import validate

    preds = tmp_path / "pt.json"
    m = validate(PT, COCO8, imgsz=320, save_json=preds)
    gt = to_coco(load_dataset(COCO8))
    results = json.loads(preds.read_text())
    assert abs(m.box.map - _pycoco(gt, results, "bbox")[0]) < 1e-3
    assert abs(m.seg.map - _pycoco(gt, results, "segm")[0]) < 1e-3
    assert m.box.map > 0.2  # real COCO weights find the objects


def test_an_unreadable_image_is_reported_and_skipped(tmp_path: Path, rt) -> None:
    data = _copy_coco8(tmp_path)
    broken = tmp_path / "coco8-seg" / "images" / "val" / "000000000042.jpg"
    broken.write_bytes(b"not a jpeg")
    m = rt.val(data=data)
    assert m.images == 3 and m.instances == 16
    assert any(str(broken) == i.path and "image skipped" in i.reason for i in m.issues)
    assert any("could not be read" in w for w in m.warnings)


def test_val_with_a_wrong_size_leaves_the_runtime_usable(rt) -> None:
    from edgeseg.errors import EdgesegError

    require_assets(MODELS / "yolov8n-seg-640-int8w.tflite")
    pytest.importorskip("ai_edge_litert", reason="needs the tflite extra")
    import gc

    from edgeseg import Runtime

    with Runtime(MODELS / "yolov8n-seg-640-int8w.tflite") as fixed:
        with pytest.raises(EdgesegError, match="fixed 640x640 input"):
            fixed.val(data=COCO8, imgsz=320)
        gc.collect()
        assert len(fixed(str(ASSETS / "images" / "bus.jpg"))) > 0


def test_val_is_multi_label_by_default_and_single_label_opts_out(tmp_path: Path, rt) -> None:
    """Multi-label (a box counts for each class over conf, as Ultralytics' val) keeps every
    single-label detection and adds more; its mAP is at least the single-label one."""
    from edgeseg.eval.validate import validate

    multi, single = tmp_path / "multi.json", tmp_path / "single.json"
    m = validate(rt, COCO8, imgsz=320, save_json=multi)
    s = validate(rt, COCO8, imgsz=320, save_json=single, single_label=True)
    pm, ps = json.loads(multi.read_text()), json.loads(single.read_text())
    assert len(pm) > len(ps)
    boxes = {(p["image_id"], tuple(round(v, 3) for v in p["bbox"])) for p in pm}
    for p in ps:  # each confident single-label box is one of multi-label's (max_det cuts the low tail)
        if p["score"] > 0.05:
            assert (p["image_id"], tuple(round(v, 3) for v in p["bbox"])) in boxes
    assert m.box.map >= s.box.map - 1e-3
    r = CliRunner().invoke(main, ["val", "-m", str(ONNX), "-d", str(COCO8), "--imgsz", "320", "--single-label", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output[r.output.index("{"):])
    assert abs(out["metrics"]["box/mAP50-95"] - s.box.map) < 1e-9
