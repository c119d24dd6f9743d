"""Checkpoint import without Ultralytics: the restricted unpickler, clear errors for files that
are not checkpoints, and edgeseg's own checkpoint format."""
from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Tuple

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


# --------------------------------------------------------------------------- TorchScript and other layouts


class _WritesOnLoad(torch.nn.Module):
    """A TorchScript module whose ``__setstate__`` (run by torch.jit.load) writes 'AAAA' into a file."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.path = target
        self.n = 0

    @torch.jit.export
    def __getstate__(self) -> Tuple[str, bool]:
        return (self.path, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[str, bool]) -> None:
        self.path = state[0]
        self.training = state[1]
        t = torch.from_file(self.path, shared=True, size=4, dtype=torch.uint8)
        t.fill_(65)
        self.n = int(t.sum())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_archive_renamed_to_pt_never_runs(tmp_path):
    sentinel = tmp_path / "pwned"
    p = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(_WritesOnLoad(str(sentinel))), str(p))
    assert not sentinel.exists()
    with pytest.raises(ModelLoadError, match="TorchScript archive"):
        load_model(p)
    assert not sentinel.exists()
    # the archive is live: torch.jit.load (what torch.load dispatches a TorchScript zip to) writes the file
    code = f"import torch; torch.jit.load({str(p)!r})"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)
    assert sentinel.read_bytes() == b"AAAA"


def test_loader_never_calls_torch_load(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a loader that can execute code was called")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(torch.jit, "load", refuse)
    m = load_model(_need(COCO_PT))
    assert m.names[0] == "person"


def _zip(path: Path, records: dict, compress: int = 0) -> Path:
    import zipfile

    with zipfile.ZipFile(path, "w", compression=compress) as z:
        for name, data in records.items():
            z.writestr(name, data)
    return path


LAYOUTS = [
    ({"a/data.pkl": b"\x80\x02}q\x00.", "a/code/__torch__.py": b"x"}, "TorchScript archive"),
    ({"a/data.pkl": b"\x80\x02}q\x00.", "a/constants.pkl": b"\x80\x02)."}, "TorchScript archive"),
    ({"a/data.pkl": b"\x80\x02}q\x00.", "b/data.pkl": b"\x80\x02}q\x00."}, "expected one folder"),
    ({"a/model.onnx": b"\x08\x07"}, "without data.pkl"),
    ({"a/data.pkl": b"\x80\x02}q\x00.", "a/payload.so": b"\x7fELF"}, "unexpected records"),
    ({"data.pkl": b"\x80\x02}q\x00."}, "expected one folder"),
]


@pytest.mark.parametrize("records,message", LAYOUTS)
def test_non_checkpoint_zip_layouts_are_refused_before_unpickling(tmp_path, records, message):
    with pytest.raises(ModelLoadError, match=message):
        load_model(_zip(tmp_path / "x.pt", records))
