"""Checkpoint import without Ultralytics: the restricted unpickler, clear errors for files that
are not checkpoints, and edgeseg's own checkpoint format."""
from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the converters need torch: pip install 'edgeseg[convert]'")

from edgeseg.converters.arch import architecture  # noqa: E402
from edgeseg.converters.checkpoint import load_model, new_model, save_checkpoint  # noqa: E402
from edgeseg.errors import ModelLoadError  # noqa: E402

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
COCO_PT = ASSETS / "models" / "yolov8n-seg-coco.pt"


def _need(p: Path) -> Path:
    if not p.exists():
        pytest.skip(f"test asset {p} not found; see ../shared/assets/README.md")
    return p


def test_metadata_recovered_from_ultralytics_checkpoint():
    m = load_model(_need(COCO_PT))
    assert len(m.names) == 80 and m.names[0] == "person" and m.names[5] == "bus"
    assert m.imgsz == (640, 640) and m.stride == 32
    assert m.info["ultralytics_version"] == "8.4.190"
    assert m.info["pickled_class"] == "ultralytics.nn.tasks.SegmentationModel"
    assert m.info["weights"] == "model"  # this checkpoint has no EMA
    assert len(m.sha256) == 64


class _Evil:
    """Pickles as a call to os.system: loading it with plain pickle would run a shell command."""

    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def test_restricted_unpickler_never_runs_code_from_the_file(tmp_path):
    sentinel = tmp_path / "pwned"
    p = tmp_path / "evil.pt"
    torch.save({"model": _Evil(f"touch {sentinel}"), "ema": None}, p)
    with pytest.raises(ModelLoadError, match="expected a pickled Ultralytics model under 'model'"):
        load_model(p)
    assert not sentinel.exists()


def _fake_ultralytics(monkeypatch, arch: dict) -> object:
    """An object that pickles as ``ultralytics.nn.tasks.DetectionModel`` (no Ultralytics needed)."""
    mod = types.ModuleType("ultralytics.nn.tasks")
    cls = type("DetectionModel", (), {"__module__": "ultralytics.nn.tasks"})
    mod.DetectionModel = cls
    for name in ("ultralytics", "ultralytics.nn"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "ultralytics.nn.tasks", mod)
    obj = cls()
    obj.__dict__.update(yaml=arch, names={0: "a"}, _modules={}, _parameters={}, _buffers={})
    return obj


def test_unknown_architecture_names_the_block(tmp_path, monkeypatch):
    arch = architecture("yolov8-seg", "n", 1)
    arch["head"][-1] = [[15, 18, 21], 1, "Detect", ["nc"]]
    p = tmp_path / "detect.pt"
    torch.save({"model": _fake_ultralytics(monkeypatch, arch), "ema": None}, p)
    monkeypatch.undo()  # the loader must not need the fake module
    with pytest.raises(ModelLoadError, match="unsupported block 'Detect'"):
        load_model(p)


def test_weights_that_do_not_fit_are_reported(tmp_path, monkeypatch):
    src = new_model("yolov8-seg", "n", 2)
    obj = _fake_ultralytics(monkeypatch, architecture("yolov8-seg", "n", 2))
    # Ultralytics' pickled module tree, reduced to one layer: the loader must list what is missing
    obj.__dict__["_modules"] = {}
    p = tmp_path / "partial.pt"
    torch.save({"model": obj, "ema": None}, p)
    monkeypatch.undo()
    with pytest.raises(ModelLoadError, match=r"do not fit the architecture 'yolov8n-seg'.*missing"):
        load_model(p)
    assert src.model.nc == 2


BAD_FILES = [
    ("empty.pt", b"", "file is empty"),
    ("random.pt", bytes(range(256)) * 8, "not a PyTorch checkpoint"),
    ("model.onnx.pt", b"\x08\x07\x12\x07pytorch" + b"\x00" * 64, "not a PyTorch checkpoint"),
]


@pytest.mark.parametrize("name,data,message", BAD_FILES)
def test_not_a_checkpoint(tmp_path, name, data, message):
    p = tmp_path / name
    p.write_bytes(data)
    with pytest.raises(ModelLoadError, match=message):
        load_model(p)


def test_truncated_checkpoint(tmp_path):
    data = _need(COCO_PT).read_bytes()
    p = tmp_path / "truncated.pt"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="truncated.pt"):
        load_model(p)


@pytest.mark.parametrize(
    "obj,message",
    [
        ({"weight": torch.zeros(3)}, "bare state_dict"),
        ({"optimizer": None, "epoch": 3}, "expected a checkpoint with a 'model' or 'ema' entry"),
        ([1, 2, 3], "expected a checkpoint dict"),
    ],
)
def test_checkpoint_without_a_model(tmp_path, obj, message):
    p = tmp_path / "x.pt"
    torch.save(obj, p)
    with pytest.raises(ModelLoadError, match=message):
        load_model(p)


def test_missing_file():
    with pytest.raises(ModelLoadError, match="checkpoint not found"):
        load_model("/nonexistent/model.pt")


@pytest.mark.parametrize("suffix,half", [(".pt", False), (".safetensors", False), (".safetensors", True)])
def test_own_format_round_trip(tmp_path, suffix, half):
    names = {0: "cat", 1: "dog", 2: "traffic light"}
    src = new_model("yolo11-seg", "n", 3, names, imgsz=(320, 480))
    out = save_checkpoint(src, tmp_path / f"own{suffix}", half=half)
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temp file left
    back = load_model(out)
    assert back.kind == "edgeseg" and back.names == names and back.imgsz == (320, 480)
    assert back.arch_name == "yolo11n-seg"
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        a, b = src.model(x), back.model(x)
    tol = 5e-2 if half else 1e-6
    for u, v in zip(a, b):
        assert torch.allclose(u, v, atol=tol, rtol=tol)


def test_own_pt_loads_with_weights_only(tmp_path):
    out = save_checkpoint(new_model("yolov8-seg", "n", 1), tmp_path / "own.pt")
    obj = torch.load(out, weights_only=True)
    assert obj["edgeseg"]["format"] == "edgeseg" and obj["edgeseg"]["arch"]["nc"] == 1
    assert "model.22.dfl.conv.weight" in obj["state_dict"]


def test_ultralytics_checkpoint_converts_to_own_format(tmp_path):
    src = load_model(_need(COCO_PT))
    out = save_checkpoint(src, tmp_path / "coco.safetensors")
    back = load_model(out)
    assert back.names == src.names
    ref = np.load(COCO_PT.with_suffix(".ref.npz"))
    with torch.no_grad():
        out0, _ = back.model(torch.from_numpy(ref["x"]))
    assert np.abs(out0.numpy() - ref["out0"]).max() <= 2e-3


def test_safetensors_without_config(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(p))
    with pytest.raises(ModelLoadError, match="without an edgeseg config"):
        load_model(p)
