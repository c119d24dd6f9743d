"""``edgeseg bench`` on the real models in ../shared/assets/models (few runs: correctness, not speed)."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Dict, List

import pytest
from click.testing import CliRunner

from edgeseg.eval.bench import BenchSettings, discover, run_bench, to_markdown
from edgeseg.cli import main
from edgeseg.errors import InputError

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
MODELS = ASSETS / "models"
BUS = ASSETS / "images" / "bus.jpg"
ONNX = MODELS / "yolov8n-seg-320-int8dyn.onnx"
COCO8 = ASSETS / "datasets" / "coco8-seg.yaml"
HAS_TORCH = importlib.util.find_spec("torch") is not None

pytestmark = pytest.mark.skipif(not MODELS.is_dir() or not BUS.is_file(), reason=f"test assets not found under {ASSETS}")


def _rows(markdown: str) -> Dict[str, List[List[str]]]:
    """Measured rows of the first table by model file name: [[backend, size, imgsz, ...], ...]."""
    table = markdown.split("Skipped or failed:")[0]
    rows: Dict[str, List[List[str]]] = {}
    for line in table.splitlines():
        if line.startswith("| ") and not line.startswith("| model"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows.setdefault(cells[0], []).append(cells[1:])
    return rows


def test_cli_models_dir_table() -> None:
    res = CliRunner().invoke(main, ["bench", "--models-dir", str(MODELS), "--runs", "2", "--warmup", "1",
                                    "--imgsz", "320", "--image", str(BUS)])
    assert res.exit_code == 0, res.output
    rows = _rows(res.output)
    model_files = sorted(p.name for p in MODELS.iterdir() if p.suffix in (".onnx", ".tflite", ".pt"))
    for name in model_files:
        if name.endswith(".pt") and not HAS_TORCH:
            assert re.search(rf"\| {re.escape(name)} \| .* \| skipped \| .*not installed", res.output), res.output
            continue
        assert name in rows, f"{name} missing from\n{res.output}"
        for cells in rows[name]:
            backend, size_mb, imgsz, load_s, pre, inf, post, total, fps, peak, dets = cells[:11]
            assert float(size_mb) == pytest.approx((MODELS / name).stat().st_size / 1e6, abs=0.06)
            med, p90 = (float(v) for v in total.split(" / "))
            assert 0 < med <= p90
            assert float(fps) == pytest.approx(1000 / med, rel=0.02, abs=0.06)
            assert float(peak) > 0  # per-model process: the model takes memory
    assert {c[0] for c in rows["yolov8n-seg-320-int8dyn.onnx"]} >= {"onnxruntime"}
    assert rows["yolov8n-seg-640-int8w.tflite"][0][2] == "640x640"  # fixed-size export keeps its size
    assert "fixed 640x640 input (--imgsz 320 not applicable)" in res.output
    if HAS_TORCH:
        assert rows["yolov8n-seg-coco.pt"][0][0] == "torch" and rows["yolov8n-seg-coco.pt"][0][2] == "320x320"
    # the COCO models find the bus and the people in bus.jpg, the random-weight ones nothing
    from edgeseg import Runtime

    with Runtime(ONNX) as rt:
        expected = len(rt(str(BUS)))
    assert expected >= 4
    assert [c[10] for c in rows["yolov8n-seg-320-int8dyn.onnx"] if c[0] == "onnxruntime"] == [str(expected)]


def test_json_report_to_file(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(main, ["bench", "--model", str(ONNX), "--backends", "onnxruntime", "--runs", "3",
                                    "--warmup", "0", "--format", "json", "--out", str(out), "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json"]  # atomic: no temp file left
    data = json.loads(out.read_text())
    assert data["settings"]["runs"] == 3 and data["system"]["board"]
    (r,) = data["results"]
    assert r["status"] == "ok" and r["backend"] == "onnxruntime" and r["format"] == "onnx"
    assert r["size_bytes"] == ONNX.stat().st_size and r["imgsz"] == [320, 320]
    for stage in ("preprocess", "inference", "postprocess", "total"):
        s = r["latency_ms"][stage]
        assert 0 <= s["min"] <= s["median"] <= s["p90"]
    assert r["latency_ms"]["inference"]["median"] < r["latency_ms"]["total"]["median"]
    assert r["fps"] == pytest.approx(1000 / r["latency_ms"]["total"]["median"])
    assert r["peak_memory_mb"] > 0 and r["load_s"] > 0


def test_in_process_and_skips(tmp_path: Path) -> None:
    junk = tmp_path / "notes.xyz"
    junk.write_text("not a model")
    settings = BenchSettings(runs=1, warmup=0, isolate=False, backends=["onnxruntime"])
    report = run_bench([str(ONNX), str(junk), str(MODELS / "yolov8n-seg-coco.pt")], settings)
    by_status = {(Path(r.model).name, r.status): r for r in report.results}
    ok = by_status[("yolov8n-seg-320-int8dyn.onnx", "ok")]
    assert ok.peak_memory_mb is not None and ok.fps > 0
    assert "no backend opens .xyz files" in by_status[("notes.xyz", "skipped")].reason
    assert "add --convert" in by_status[("yolov8n-seg-coco.pt", "skipped")].reason
    text = to_markdown(report)
    assert "Skipped or failed:" in text and "notes.xyz" in text


@pytest.mark.skipif(not HAS_TORCH, reason="converting a .pt needs torch (pip install 'edgeseg[convert]')")
def test_convert_checkpoint_to_each_backend_format(tmp_path: Path) -> None:
    from edgeseg.converters.export.registry import exporters

    settings = BenchSettings(runs=1, warmup=0, isolate=False, convert=True, imgsz=320, image=str(BUS),
                             backends=["onnxruntime", "coreml"])
    report = run_bench([str(MODELS / "yolov8n-seg-coco.pt")], settings)
    results = {(r.backend, r.status): r for r in report.results}
    onnx = results[("onnxruntime", "ok")]
    assert onnx.origin == "exported from yolov8n-seg-coco.pt" and onnx.imgsz == [320, 320] and onnx.detections >= 1
    if "coreml" not in {e.backend for e in exporters().values()}:
        assert "cannot produce 'coreml'" in results[("coreml", "skipped")].reason
    elif not exporters()["coreml"].bench:  # off macOS: CoreML converts but cannot predict here
        assert "does not make coreml exports on this machine" in results[("coreml", "skipped")].reason
    assert "(exported from yolov8n-seg-coco.pt)" in to_markdown(report)


@pytest.mark.skipif(not COCO8.is_file(), reason="coco8-seg dataset not found")
def test_mask_map_with_data() -> None:
    pytest.importorskip("edgeseg.eval.validate", reason="edgeseg.eval.validate is not available")
    report = run_bench([str(ONNX)], BenchSettings(runs=1, warmup=0, isolate=False, backends=["onnxruntime"],
                                                   data=str(COCO8)))
    (r,) = report.results
    assert r.status == "ok", r.reason
    assert 0 < r.metrics["seg/mAP50-95"] <= r.metrics["seg/mAP50"] <= 1
    assert 0 < r.metrics["box/mAP50-95"] <= 1
    assert "mask mAP50-95" in to_markdown(report)


BAD_CLI = [
    (["bench"], "give --model FILE"),
    (["bench", "--model", str(ONNX), "--backends", "nosuchbackend"], "unknown backends ['nosuchbackend']"),
    (["bench", "--model", str(ONNX), "--runs", "0"], "Invalid value for '--runs'"),
    (["bench", "--model", "/nonexistent.onnx"], "does not exist"),
]


@pytest.mark.parametrize("args,message", BAD_CLI, ids=[a[1] for a in BAD_CLI])
def test_cli_errors(args: List[str], message: str) -> None:
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 or res.exit_code == 1
    assert message in res.output and "Traceback" not in res.output


def test_discover_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no models to benchmark"):
        discover([], None, BenchSettings())
    with pytest.raises(InputError, match="not a folder"):
        discover([], str(tmp_path / "nope"), BenchSettings())
    with pytest.raises(InputError, match="runs must be an integer"):
        BenchSettings(runs=0).check()


@pytest.mark.skipif(not HAS_TORCH, reason="converting a .pt needs torch (pip install 'edgeseg[convert]')")
def test_bench_leaves_no_temp_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Exports and worker results live in temp folders that are gone when bench returns (and
    discover, which cannot know when its exports are done with, refuses to make one)."""
    import tempfile

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))  # the isolated worker process
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))

    def ours() -> List[str]:  # folders, and files named after edgeseg or the model (the sandbox may add others)
        return sorted(p.name for p in tmp.iterdir() if p.is_dir() or "edgeseg" in p.name or "yolov8n" in p.name)

    pt = str(MODELS / "yolov8n-seg-coco.pt")
    settings = BenchSettings(runs=1, warmup=0, convert=True, imgsz=64, backends=["onnxruntime"])
    with pytest.raises(InputError, match="needs a workdir"):
        discover([pt], None, settings)
    assert ours() == []
    report = run_bench([pt], settings)
    assert [(r.backend, r.status, r.origin) for r in report.results] == [
        ("onnxruntime", "ok", "exported from yolov8n-seg-coco.pt")]
    assert ours() == []


@pytest.mark.skipif(not HAS_TORCH, reason="the fp32 export needs torch (pip install 'edgeseg[convert]')")
def test_fp32_vs_int8_side_by_side(tmp_path: Path) -> None:
    """An fp32 ONNX export of the COCO checkpoint and the int8 (dynamic) ONNX of the same weights, on
    coco8-seg at 320: one group, fp32 first, speed-ups and mAP differences computed from the run."""
    from edgeseg.converters import export
    from edgeseg.eval.bench import BenchReport, BenchResult, precision_table

    pt = MODELS / "yolov8n-seg-coco.pt"
    if not pt.is_file() or not COCO8.is_file():
        pytest.skip(f"{pt} or {COCO8} not found")
    fp32 = export(pt, to="onnx", imgsz=320, out=tmp_path / "n.onnx", progress=False)
    res = CliRunner().invoke(main, ["bench", "-m", str(fp32), "-m", str(ONNX), "--backends", "onnxruntime",
                                    "--data", str(COCO8), "--runs", "2", "--warmup", "1", "--image", str(BUS),
                                    "--format", "json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output[res.output.index("{"):])
    by_model = {Path(r["model"]).name: r for r in rep["results"]}
    assert by_model["n.onnx"]["precision"] == "fp32" and by_model[ONNX.name]["precision"] == "int8"
    rows = rep["precisions"]
    assert [(r["format"], r["backend"], r["precision"]) for r in rows] == [("onnx", "onnxruntime", "fp32"),
                                                                          ("onnx", "onnxruntime", "int8")]
    ref, q = by_model["n.onnx"], by_model[ONNX.name]
    for stage in ("inference", "total"):
        assert rows[0][f"{stage}_speedup"] == pytest.approx(1.0)
        assert rows[1][f"{stage}_speedup"] == pytest.approx(ref["latency_ms"][stage]["median"]
                                                            / q["latency_ms"][stage]["median"])
    for key, name in (("seg/mAP50-95", "mask_map"), ("box/mAP50-95", "box_map")):
        assert 0 < ref["metrics"][key] <= 1 and 0 < q["metrics"][key] <= 1
        assert rows[1][f"{name}_points"] == pytest.approx((q["metrics"][key] - ref["metrics"][key]) * 100, abs=0.01)
    report = BenchReport(rep["system"], rep["settings"], [BenchResult(**r) for r in rep["results"]])
    assert precision_table(report) == rows
    md = to_markdown(report)
    section = md.split("fp32 vs int8 per format", 1)[1]
    int8_line = next(ln for ln in section.splitlines() if f"| {ONNX.name} |" in ln)
    assert int8_line.startswith("| onnx (onnxruntime) | int8 |")
    assert f"{rows[1]['inference_speedup']:.2f}x" in int8_line and f"{rows[1]['mask_map_points']:+.2f}" in int8_line
