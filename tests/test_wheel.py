"""What users install: a wheel built from this tree, in a fresh venv with one backend extra.

The editable install that ``make test`` uses would hide a package missing from the wheel (as
``edgeseg.data`` once was), so this builds the wheel, installs ``edgeseg[onnx]`` into a new venv and
runs the commands there from a folder outside the checkout.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from _assets import ASSETS, IMAGES, MODELS, ROOT, require_assets

pytestmark = pytest.mark.slow

SOURCE_ROOTS = {"edgeseg": "edgeseg", "runtimes": "edgeseg/runtimes", "converters": "edgeseg/converters",
                "boards": "edgeseg/boards"}


def _run(*cmd: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    r = _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT), cwd=out)
    assert r.returncode == 0, r.stderr[-3000:]
    (whl,) = out.glob("edgeseg-*.whl")
    return whl


def test_wheel_holds_every_package_and_data_file(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = set()
    for folder, target in SOURCE_ROOTS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.relative_to(ROOT / folder)
            if folder == "edgeseg" and rel.parts[0] in SOURCE_ROOTS:
                continue
            expected.add(f"{target}/{rel.as_posix()}")
        for py in (ROOT / folder).rglob("*.py"):
            rel = py.relative_to(ROOT / folder)
            if not (folder == "edgeseg" and rel.parts[0] in SOURCE_ROOTS) and "__pycache__" not in rel.parts:
                expected.add(f"{target}/{rel.as_posix()}")
    expected |= {f"edgeseg/boards/{p.name}" for p in (ROOT / "boards").glob("*.yaml")}
    expected.add("edgeseg/py.typed")
    expected |= {f"edgeseg/assets/{p.name}" for p in (ROOT / "edgeseg" / "assets").iterdir()}  # the default model
    missing = sorted(expected - names)
    assert not missing, f"files of the source tree missing from the wheel: {missing}"
    assert "edgeseg/eval/datasets/yolo.py" in names


def test_wheel_in_a_fresh_venv_runs_val_data_check_and_predict(wheel: Path, tmp_path: Path):
    data = ASSETS / "datasets" / "coco8-seg.yaml"
    model = MODELS / "yolov8n-seg-320-int8dyn.onnx"
    require_assets(data, model)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    r = _run(str(py), "-m", "pip", "install", "-q", f"{wheel}[onnx]", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    where = _run(str(py), "-c", "import edgeseg, edgeseg.eval.datasets, sys; print(edgeseg.__file__);"
                 "print([m for m in ('torch', 'edgeseg.converters') if m in sys.modules])", cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    assert str(env_dir) in where.stdout and str(ROOT) not in where.stdout, where.stdout
    assert where.stdout.strip().endswith("[]")
    exe = str(env_dir / "bin" / "edgeseg")

    r = _run(exe, "data", "check", str(data), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr

    r = _run(exe, "val", "-m", str(model), "-d", str(data), "--imgsz", "320", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads(r.stdout)["metrics"]
    # the same numbers as the editable install gives (COCO mAP of this model on coco8-seg val)
    assert metrics["box/mAP50-95"] > 0.2 and metrics["seg/mAP50"] > 0.25, metrics

    out = tmp_path / "pred.json"
    r = _run(exe, "predict", "-m", str(model), "-s", str(IMAGES / "bus.jpg"), "--json", str(out),
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    text = out.read_text()
    assert "bus" in text and "person" in text

    # no model given: the embedded default model, read from the installed wheel
    r = _run(exe, "data", "synth", "--out", str(tmp_path / "synth"), "--images", "4", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "default.json"
    r = _run(exe, "predict", "-s", str(tmp_path / "synth" / "images" / "val"), "--json", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "embedded default model" in r.stderr
    result = json.loads(out.read_text())
    assert result["model"].startswith(str(env_dir)) and '"class_name"' in out.read_text(), result["model"]
