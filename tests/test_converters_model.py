"""The torch model family: our modules reproduce Ultralytics' own raw outputs, fused and unfused,
without Ultralytics installed."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the converters need torch: pip install 'edgeseg[convert]'")

from edgeseg.converters.arch import architecture  # noqa: E402
from edgeseg.converters.checkpoint import load_model  # noqa: E402
from edgeseg.converters.model import SegmentationModel  # noqa: E402

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
MODELS = ASSETS / "models"

# checkpoint, family name we recover, number of classes
CHECKPOINTS = [
    ("yolov8n-seg-coco", "yolov8n-seg"),
    ("yolo11n-seg-random", "yolo11n-seg"),
    ("yolov8s-seg-random", "yolov8s-seg"),
]

# limits from the issue: boxes in pixels, the rest (scores, coefficients, protos) absolute
BOX_TOL, OTHER_TOL = 2e-3, 1e-4


def _assets(name: str) -> Path:
    p = MODELS / f"{name}.pt"
    if not p.is_file() or not p.with_suffix(".ref.npz").is_file():
        pytest.skip(f"test asset {p} (and its .ref.npz) not found; see ../shared/assets/README.md")
    return p


def test_loading_never_imports_ultralytics():
    """Ultralytics is not installed here; and even where it is, the loader never imports it."""
    import subprocess
    import sys

    path = _assets("yolov8n-seg-coco")
    code = (
        "import sys; from edgeseg.converters import load_model; "
        f"load_model({str(path)!r}); print('ultralytics' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    if importlib.util.find_spec("ultralytics") is not None:
        pytest.fail("Ultralytics is installed in this environment; the issue's check must run without it")


@pytest.mark.parametrize("name,arch_name", CHECKPOINTS)
def test_raw_outputs_match_ultralytics(name, arch_name):
    path = _assets(name)
    ref = np.load(path.with_suffix(".ref.npz"))
    loaded = load_model(path)
    assert loaded.arch_name == arch_name
    assert loaded.kind == "ultralytics" and loaded.imgsz == (640, 640)
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters()), "fp16 checkpoint must load as fp32"
    nc = len(loaded.names)
    x = torch.from_numpy(ref["x"])
    for fused in (False, True):
        if fused:
            loaded.model.fuse()
            assert loaded.model.fused
        with torch.no_grad():
            out0, protos = (t.numpy() for t in loaded.model(x))
        assert out0.shape == ref["out0"].shape and protos.shape == ref["protos"].shape
        err = np.abs(out0 - ref["out0"])
        what = "fused" if fused else "unfused"
        assert err[:, :4].max() <= BOX_TOL, f"{name} {what}: box error {err[:, :4].max()}"
        assert err[:, 4:4 + nc].max() <= OTHER_TOL, f"{name} {what}: class score error {err[:, 4:4 + nc].max()}"
        assert err[:, 4 + nc:].max() <= OTHER_TOL, f"{name} {what}: mask coefficient error {err[:, 4 + nc:].max()}"
        perr = np.abs(protos - ref["protos"]).max()
        assert perr <= OTHER_TOL, f"{name} {what}: proto error {perr}"


def test_checkpoint_keys_line_up_one_to_one():
    """The checkpoint's tensors load with strict key and shape matching (no renaming)."""
    from edgeseg.converters.unpickle import module_tree_state_dict, read_checkpoint

    path = _assets("yolov8n-seg-coco")
    ckpt, _archive = read_checkpoint(path)
    theirs = module_tree_state_dict(ckpt["model"])
    ours = SegmentationModel(architecture("yolov8-seg", "n", 80)).state_dict()
    assert set(theirs) == set(ours)
    assert {k: tuple(v.shape) for k, v in theirs.items()} == {k: tuple(v.shape) for k, v in ours.items()}
    for key in ("model.0.conv.weight", "model.22.cv2.0.0.conv.weight", "model.22.proto.cv1.conv.weight",
                "model.22.dfl.conv.weight", "model.22.cv4.2.2.bias"):
        assert key in ours


# Parameter counts published for Ultralytics' models (nc=80), in millions; the n scales also
# match the checkpoints exactly (see test_raw_outputs_match_ultralytics: strict load).
PARAMS_M = [
    ("yolov8-seg", "n", 3.4), ("yolov8-seg", "s", 11.8), ("yolov8-seg", "m", 27.3), ("yolov8-seg", "l", 46.0),
    ("yolov8-seg", "x", 71.8), ("yolo11-seg", "n", 2.9), ("yolo11-seg", "s", 10.1), ("yolo11-seg", "m", 22.4),
    ("yolo11-seg", "l", 27.7), ("yolo11-seg", "x", 62.1),
]


@pytest.mark.parametrize("family,scale,millions", PARAMS_M)
def test_family_scales_have_the_published_sizes(family, scale, millions):
    model = SegmentationModel(architecture(family, scale, 80))
    n = sum(p.numel() for p in model.parameters())
    assert round(n / 1e6, 1) == millions
    assert model.stride.tolist() == [8.0, 16.0, 32.0]


@pytest.mark.parametrize("family,nc", [("yolov8-seg", 1), ("yolo11-seg", 7)])
def test_any_class_count_and_rectangular_input(family, nc):
    model = SegmentationModel(architecture(family, "n", nc)).eval()
    with torch.no_grad():
        out0, protos = model(torch.rand(1, 3, 96, 160))
    anchors = sum((96 // s) * (160 // s) for s in (8, 16, 32))
    assert out0.shape == (1, 4 + nc + 32, anchors)
    assert protos.shape == (1, 32, 24, 40)
    scores = out0[:, 4:4 + nc]
    assert float(scores.min()) >= 0.0 and float(scores.max()) <= 1.0  # sigmoid applied


def test_fusion_keeps_outputs():
    torch.manual_seed(0)
    model = SegmentationModel(architecture("yolo11-seg", "n", 5)).eval()
    for m in model.modules():  # non-trivial BatchNorm statistics so fusion is really exercised
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a = model(x)
        b = model.fuse()(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    for u, v in zip(a, b):
        assert torch.allclose(u, v, atol=1e-4, rtol=1e-4)


def test_unknown_family_and_scale_are_clear_errors():
    from edgeseg.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="unknown architecture 'yolov5-seg'"):
        architecture("yolov5-seg")
    with pytest.raises(ModelLoadError, match="unknown scale 'q'"):
        architecture("yolo11-seg", "q")
