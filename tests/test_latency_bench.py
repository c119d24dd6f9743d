"""benchmarks/latency.py runs as users run it (``make bench``) and prints figures that hang
together: the overheads are (Runtime - bare) / bare of the printed times, and the stage table
(the full calls' own preprocess / postprocess timings) is consistent with them. Speed itself is
the benchmark's business, not a test's: nothing here asserts how fast anything is."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from _assets import MODELS, ASSETS, require_assets

pytest.importorskip("ai_edge_litert")

ROOT = Path(__file__).resolve().parents[1]
MODEL = MODELS / "yolov8n-seg-640-int8w.tflite"
NUM = r"(-?\d+\.\d+)"


def test_latency_benchmark_prints_consistent_figures() -> None:
    require_assets(MODEL, ASSETS / "images" / "bus.jpg")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "latency.py"), "--runs", "3", "--models", str(MODEL)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MODEL.name)]
    assert len(lines) == 2, proc.stdout  # the overhead table and the stage table
    m = re.match(rf"{re.escape(MODEL.name)}\s+{NUM}\s+{NUM}\s+{NUM}\s+(\d+)\s+{NUM} \(\s*{NUM}ms\)\s+{NUM} \(\s*{NUM}ms\)",
                 lines[0])
    assert m, lines[0]
    bare, boxes, full, dets = float(m[1]), float(m[2]), float(m[3]), int(m[4])
    assert bare > 0 and boxes > 0 and full > 0 and dets > 0
    assert float(m[5]) == pytest.approx((boxes - bare) / bare, abs=2e-3)
    assert float(m[7]) == pytest.approx((full - bare) / bare, abs=2e-3)
    assert float(m[8]) == pytest.approx(full - bare, abs=0.06)
    s = re.match(rf"{re.escape(MODEL.name)}\s+{NUM}\s+{NUM}\s+{NUM}\s+{NUM}\s+{NUM}\s+{NUM}$", lines[1])
    assert s, lines[1]
    pre, invoke, post, pre_bare, post_bare, saved_bare = map(float, s.groups())
    assert 0 < pre < full and 0 < invoke < full and 0 < post < full
    assert pre + invoke + post <= full * 1.05  # medians of parts of one call (rounded to 0.01 ms)
    assert pre_bare == pytest.approx(pre / bare, abs=2e-3)
    assert post_bare == pytest.approx(post / bare, abs=2e-3)
    assert saved_bare == pytest.approx((bare - invoke) / bare, abs=2e-3)
