"""The embedded default model (edgeseg/assets/) end to end, with no third-party files: what a fresh
install or a clone without ../shared gets. Runtime, val, the live path (run --track on a synthetic
clip against its ground truth) and the CLI defaults, on synthetic data generated here with seeds
the model never saw (it was trained on seed 0)."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from edgeseg import Runtime  # noqa: E402
from edgeseg import default_model as dm  # noqa: E402
from edgeseg.errors import ModelLoadError  # noqa: E402
from edgeseg.eval.datasets.synth import synth_dataset  # noqa: E402
from edgeseg.eval.mot import mot_metrics  # noqa: E402
from edgeseg.eval.validate import validate  # noqa: E402

EDGESEG = [sys.executable, "-c", "from edgeseg.cli import main; main(prog_name='edgeseg')"]
ONNX = dm.ASSETS / dm.FILES[0]
TFLITE = dm.ASSETS / dm.FILES[1]

if not ONNX.is_file():
    pytest.skip(f"the embedded default model {ONNX} is missing from this checkout", allow_module_level=True)


@pytest.fixture(scope="module")
def heldout(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    """A held-out synthetic set (seed 2) with a 6 s clip and its ground truth."""
    return synth_dataset(tmp_path_factory.mktemp("heldout") / "synth", images=80, imgsz=320, seed=2,
                         val_fraction=0.5, video=6.0, fps=10)


def test_packaged_files_are_small_and_described() -> None:
    sizes = {p.name: p.stat().st_size for p in dm.default_model_files()}
    assert set(sizes) == set(dm.FILES)
    assert sum(sizes.values()) < 8 * 2**20, sizes
    with Runtime(TFLITE, backend="litert") if _has_litert() else Runtime(ONNX) as rt:
        assert rt.names == dict(enumerate(dm.CLASSES))
        assert tuple(rt.fixed_imgsz) == (320, 320) and rt.info["input"]["imgsz"] == [320, 320]


def _has_litert() -> bool:
    import importlib.util

    return importlib.util.find_spec("ai_edge_litert") is not None or importlib.util.find_spec("tflite_runtime") is not None


def test_runtime_without_model_uses_it_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    dm._said.clear()
    with caplog.at_level(logging.WARNING, logger="edgeseg"):
        with Runtime() as a, Runtime() as b:
            assert a.path == ONNX and b.path == ONNX
    said = [r for r in caplog.records if "embedded default model" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert "synthetic shapes" in said[0].getMessage()


def test_default_model_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="opens none of the embedded default model"):
        dm.default_model("ncnn")
    monkeypatch.setattr(dm, "ASSETS", tmp_path)
    with pytest.raises(ModelLoadError, match="no embedded default model"):
        Runtime()


def test_heldout_accuracy_onnx(heldout: Dict[str, Any]) -> None:
    with Runtime() as rt:
        m = validate(rt, heldout["yaml"])
    assert m.images == 40 and m.instances > 100
    # measured on this 40-image set: box 0.861, mask 0.829 (README, Default model); the mask bound is
    # the target for the embedded model
    assert m.seg.map >= 0.75, m.results_dict
    assert m.box.map >= 0.80, m.results_dict


@pytest.mark.skipif(not _has_litert(), reason="LiteRT not installed (pip install 'edgeseg[tflite]')")
def test_heldout_accuracy_int8_tflite_close_to_onnx(heldout: Dict[str, Any]) -> None:
    with Runtime() as rt:
        ref = validate(rt, heldout["yaml"])
    with Runtime(backend="litert") as rt:
        assert rt.path == TFLITE
        q = validate(rt, heldout["yaml"])
    assert abs(q.seg.map - ref.seg.map) < 0.03, (q.results_dict, ref.results_dict)
    assert abs(q.box.map - ref.box.map) < 0.03, (q.results_dict, ref.results_dict)


def _records(path: Path) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_run_track_on_clip_without_model(heldout: Dict[str, Any], tmp_path: Path) -> None:
    """The demo's job: `edgeseg run` with no --model over a synthetic clip, tracked, saved as video + JSON."""
    out_json, out_video = tmp_path / "det.jsonl", tmp_path / "demo.mp4"
    p = subprocess.run(EDGESEG + ["run", "--source", str(heldout["video"]), "--every-frame", "--track",
                                  "--json", str(out_json), "--save", str(out_video)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "embedded default model" in p.stderr
    assert "inference" in p.stderr  # per-stage speed line
    assert out_video.stat().st_size > 10_000
    records = _records(out_json)
    gt = _records(Path(heldout["video_gt"]))
    assert len(records) == len(gt) == heldout["frames"]
    frames = []
    for rec, g in zip(records, gt):
        dets = rec["detections"]
        assert all(d["class_name"] in dm.CLASSES for d in dets)
        frames.append((np.array([o["track_id"] for o in g["objects"]]),
                       np.array([o["box"] for o in g["objects"]], float).reshape(-1, 4),
                       np.array([d["track_id"] for d in dets]),
                       np.array([d["box"] for d in dets], float).reshape(-1, 4)))
    mot = mot_metrics(frames)
    # measured: IDF1 0.78, MOTA 0.85 (this small demo model misses some small or occluded shapes)
    assert mot["idf1"] > 0.7, mot
    assert mot["mota"] > 0.78, mot


def test_predict_and_info_without_model(heldout: Dict[str, Any], tmp_path: Path) -> None:
    images = Path(heldout["yaml"]).parent / "images" / "val"
    out = tmp_path / "pred.json"
    p = subprocess.run(EDGESEG + ["predict", "--source", str(images), "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    data = out.read_text()
    assert data.count('"class_name"') > 100
    p = subprocess.run(EDGESEG + ["info", "--json"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["names"] in (dict(enumerate(dm.CLASSES)), {str(i): n for i, n in enumerate(dm.CLASSES)})
