"""The torch backend: checkpoints (dynamic input) and TorchScript files through the Runtime."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch backend needs torch: pip install 'edgeseg[convert]'")

from edgeseg import Runtime  # noqa: E402
from edgeseg.backend import select_backend  # noqa: E402
from edgeseg.converters.checkpoint import new_model, save_checkpoint  # noqa: E402
from edgeseg.converters.torch_backend import TorchBackend  # noqa: E402
from edgeseg.errors import InputError, ModelLoadError  # noqa: E402

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
COCO_PT = ASSETS / "models" / "yolov8n-seg-coco.pt"
BUS = ASSETS / "images" / "bus.jpg"


def _need(*paths: Path) -> None:
    for p in paths:
        if not p.exists():
            pytest.skip(f"test asset {p} not found; see ../shared/assets/README.md")


def test_module_import_does_not_import_torch():
    code = "import sys, edgeseg.converters, edgeseg.converters.torch_backend; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_checkpoint_specs_and_metadata():
    _need(COCO_PT)
    be = TorchBackend(COCO_PT)
    assert be.inputs[0].name == "images" and be.inputs[0].shape == (1, 3, None, None)
    assert [(s.name, s.shape) for s in be.outputs] == [("output0", (1, 116, None)), ("output1", (1, 32, None, None))]
    assert be.metadata["names"][5] == "bus" and be.metadata["imgsz"] == [640, 640] and be.metadata["stride"] == 32
    assert be.metadata["task"] == "segment" and be.describe()["fused"] is True
    out = be.run({"images": np.zeros((1, 3, 96, 128), np.float32)})
    assert out["output0"].shape == (1, 116, 12 * 16 + 6 * 8 + 3 * 4) and out["output1"].shape == (1, 32, 24, 32)


def test_fused_and_unfused_agree():
    _need(COCO_PT)
    x = np.random.default_rng(0).random((1, 3, 128, 96), dtype=np.float32)
    a = TorchBackend(COCO_PT, fuse=False).run({"images": x})
    b = TorchBackend(COCO_PT).run({"images": x})
    assert np.abs(a["output0"][:, :4] - b["output0"][:, :4]).max() < 2e-3
    assert np.abs(a["output1"] - b["output1"]).max() < 1e-4


def test_pt_uses_rectangular_letterbox():
    _need(COCO_PT, BUS)
    with Runtime(COCO_PT, imgsz=320) as rt:
        assert rt.backend.name == "torch" and rt.backend.format == "pytorch"
        feeds, lb = rt.preprocess(np.zeros((1080, 810, 3), np.uint8))
        assert feeds["images"].shape == (1, 3, 320, 256)  # 810 * 320/1080 = 240 -> padded to 256
        res = rt(str(BUS))
        assert "bus" in res.class_names and res.class_names.count("person") >= 3


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_own_checkpoint_through_runtime(tmp_path, suffix):
    names = {0: "widget", 1: "gadget"}
    p = save_checkpoint(new_model("yolo11-seg", "n", 2, names, imgsz=(128, 160)), tmp_path / f"m{suffix}")
    assert select_backend(p).name == "torch"
    with Runtime(p, conf=0.01) as rt:
        assert rt.names == names and rt.imgsz == (128, 160)
        res = rt(np.full((90, 120, 3), 100, np.uint8))
        assert res.orig_shape == (90, 120)  # random weights: any detections are noise, shapes are what matter
        assert rt.layout.nc == 2 and rt.layout.nm == 32


def test_errors(tmp_path):
    bad = tmp_path / "bad.torchscript"
    bad.write_bytes(b"garbage" * 10)
    with pytest.raises(ModelLoadError, match="not a loadable TorchScript file"):
        TorchBackend(bad)
    with pytest.raises(ModelLoadError, match="model not found"):
        TorchBackend(tmp_path / "missing.pt")
    _need(COCO_PT)
    with pytest.raises(InputError, match="unknown options"):
        TorchBackend(COCO_PT, providers=["cpu"])
    be = TorchBackend(COCO_PT)
    with pytest.raises(InputError, match=r"expected input \(1, 3, H, W\)"):
        be.run({"images": np.zeros((1, 64, 64, 3), np.float32)})
