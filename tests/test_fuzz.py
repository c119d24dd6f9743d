"""Seeded fuzz test: a few hundred mutated checkpoints, ONNX/TFLite/ncnn models and images (every
mutation class of benchmarks/fuzz.py: bit flips, truncations, zeroed/overwritten regions, duplicated
chunks, swapped headers, hostile pickles, bombs). Each case runs in a worker process under a 4 GB
address-space limit and must end, within 60 s, in a clean result or an edgeseg error: no other
exception, no signal, no hang, no payload run. ``python benchmarks/fuzz.py`` runs thousands."""
from __future__ import annotations

import collections
import importlib.util
from pathlib import Path

import pytest

from _assets import ASSETS, MODELS, require_assets

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")
pytest.importorskip("ncnn")

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("edgeseg_fuzz", ROOT / "benchmarks" / "fuzz.py")
fuzz = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fuzz)

# cases per format: every mutation class of each format several times over (291 cases)
COUNTS = {"image": 120, "ncnn": 60, "checkpoint": 45, "onnx": 36, "tflite": 30}


@pytest.mark.parametrize("fmt", list(COUNTS))
def test_fuzz(tmp_path, fmt):
    require_assets(ASSETS / "images" / "bus.jpg", MODELS / "yolov8n-seg-coco.pt",
                   MODELS / "yolov8n-seg-320-int8dyn.onnx", MODELS / "yolov8n-seg-640-int8w.tflite")
    rows = fuzz.plan(COUNTS, seed=9)[fmt]
    results = fuzz.run_format(fmt, rows, tmp_path, timeout=60.0, mem_gb=4.0)
    assert len(results) == len(rows)
    bad = [r for r in results if r["outcome"].startswith(fuzz.BAD_OUTCOMES) or r["outcome"].startswith("skip")]
    assert not bad, "\n".join(f"{r['mutation']} case {r['id']}: {r['outcome']} {r.get('detail', '')} {r.get('msg', '')}"
                              for r in bad[:10])
    seen = collections.Counter(r["mutation"] for r in results)
    assert set(seen) == set(fuzz.MUTATIONS[fmt])  # every class ran
    assert any(r["outcome"].startswith("error:") for r in results)  # the mutations do break files
    for r in results:
        if r["mutation"] in ("hostile", "bomb") and fmt == "checkpoint":
            assert r["outcome"] == "error:ModelLoadError", r
        if r["mutation"] == "bomb" and fmt == "image":
            assert r["outcome"] == "error:ImageReadError", r


@pytest.mark.parametrize("fmt,kind,count", [("checkpoint", "hostile", 14), ("checkpoint", "bomb", 13), ("image", "bomb", 7)])
def test_every_hostile_file_and_bomb(tmp_path, fmt, kind, count):
    """Each payload once (the seeded run above takes them in turn): never run, never exhaust memory."""
    require_assets(MODELS / "yolov8n-seg-coco.pt", ASSETS / "images" / "bus.jpg")
    rows = [(i, kind, i) for i in range(count)]
    results = fuzz.run_format(fmt, rows, tmp_path, timeout=60.0, mem_gb=4.0)
    expected = "error:ModelLoadError" if fmt == "checkpoint" else "error:ImageReadError"
    assert [r["outcome"] for r in results] == [expected] * count, [(r["detail"], r["outcome"]) for r in results]
    assert len({r["detail"] for r in results}) == count  # every payload, none twice
    assert all(r.get("rss_growth_mb", 0) < 1024 for r in results), [(r["detail"], r["rss_growth_mb"]) for r in results]
