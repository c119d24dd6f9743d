"""Bad input gets a clear edgeseg error: corrupt models, wrong formats, bad images and arguments."""
from __future__ import annotations

import os

import numpy as np
import pytest

from _assets import MODELS, image_path, require_assets
from edgeseg import Runtime
from edgeseg.backend import backend_classes
from edgeseg.errors import (BackendUnavailableError, EdgesegError, ImageReadError, InputError,
                            ModelLoadError)
from edgeseg.io import read_image, to_bgr

ONNX = MODELS / "yolov8n-seg-320-int8dyn.onnx"
TFLITE = MODELS / "yolov8n-seg-640-int8w.tflite"


def _suffixes():
    """Every file suffix a registered backend opens."""
    return sorted({s for cls in backend_classes().values() for s in cls.suffixes})


def _corruptions(tmp_path, suffix):
    real = {".onnx": ONNX, ".tflite": TFLITE}.get(suffix)
    rng = np.random.default_rng(0)
    cases = {
        "empty": b"",
        "random": rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "text": b"this is not a model\n" * 20,
    }
    if real is not None and real.exists():
        data = real.read_bytes()
        cases["truncated"] = data[: len(data) // 3]
    if suffix == ".onnx" and TFLITE.exists():
        cases["wrong-format"] = TFLITE.read_bytes()[:200_000]
    if suffix == ".tflite" and ONNX.exists():
        cases["wrong-format"] = ONNX.read_bytes()[:200_000]
    for name, data in cases.items():
        p = tmp_path / f"{name}{suffix}"
        p.write_bytes(data)
        yield name, p


@pytest.mark.parametrize("suffix", _suffixes())
def test_corrupt_model_files_raise_edgeseg_errors(tmp_path, suffix):
    for name, path in _corruptions(tmp_path, suffix):
        with pytest.raises(EdgesegError) as info:
            Runtime(path)
        # a missing package is reported as such; anything else names the file (or its companion file)
        assert isinstance(info.value, (ModelLoadError, BackendUnavailableError)), (name, info.value)
        if isinstance(info.value, ModelLoadError):
            assert path.stem in str(info.value), (name, str(info.value))


def test_unknown_suffix_lists_the_known_formats(tmp_path):
    p = tmp_path / "model.weights"
    p.write_bytes(b"x" * 100)
    with pytest.raises(ModelLoadError, match=r"unsupported model format.*\.onnx.*found suffix '\.weights'"):
        Runtime(p)


def test_missing_model_file():
    with pytest.raises(ModelLoadError, match="model not found"):
        Runtime("does/not/exist.onnx")


def test_missing_backend_package_names_the_extra(tmp_path, monkeypatch):
    require_assets(ONNX)
    import importlib.util

    real = importlib.util.find_spec
    # openvino also opens .onnx: hide both so that no backend is left
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n in ("onnxruntime", "openvino") else real(n, *a))
    with pytest.raises(BackendUnavailableError, match=r"pip install 'edgeseg\[onnx\]'"):
        Runtime(ONNX)
    with pytest.raises(BackendUnavailableError, match=r"pip install 'edgeseg\[onnx\]'"):
        Runtime(ONNX, backend="onnxruntime")


@pytest.mark.parametrize("kwargs, message", [
    ({"conf": 1.5}, "conf must be a number between 0 and 1"),
    ({"iou": -0.1}, "iou must be a number between 0 and 1"),
    ({"max_det": 0}, "max_det must be a positive integer"),
    ({"threads": 0}, "threads must be a positive integer"),
    ({"classes": ["person"]}, "classes must be a list of integer class ids"),
    ({"imgsz": 320.5}, "imgsz must be an int"),
    ({"imgsz": 640}, "fixed 320x320 input"),
    ({"backend": "tflite-gpu"}, "unknown backend 'tflite-gpu'"),
    ({"backend": "tensorrt"}, "backend 'tensorrt' opens .engine models"),
    ({"backend": "litert"}, "backend 'litert' opens .tflite models"),
    ({"nms": "fast"}, "nms must be 'numpy' or 'opencv'"),
])
def test_invalid_arguments(kwargs, message):
    require_assets(ONNX)
    with pytest.raises(EdgesegError, match=message):
        Runtime(ONNX, **kwargs)


@pytest.mark.parametrize("array, message", [
    (np.zeros((0, 10, 3), np.uint8), "expected an HxWx3 image array"),
    (np.zeros((10,), np.uint8), "expected an HxWx3 image array"),
    (np.zeros((10, 10, 2), np.uint8), "expected 1, 3 or 4 channels"),
    (np.zeros((10, 10, 3), np.int32), "expected dtype uint8"),
    (np.full((10, 10, 3), np.nan, np.float32), "NaN"),
    ("not an array".encode(), "expected a numpy array"),
])
def test_malformed_arrays_are_rejected(array, message):
    with pytest.raises(InputError, match=message):
        to_bgr(array)


def test_grayscale_rgba_16bit_and_float_images_are_converted():
    rng = np.random.default_rng(1)
    bgr = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    gray = bgr[:, :, 0]
    assert to_bgr(gray).shape == (20, 30, 3) and (to_bgr(gray)[:, :, 2] == gray).all()
    assert (to_bgr(np.dstack([bgr, np.full((20, 30), 255, np.uint8)])) == bgr).all()
    assert (to_bgr(bgr.astype(np.uint16) * 257) == bgr).all()
    assert (to_bgr(bgr.astype(np.float32) / 255) == bgr).all()


def test_runtime_accepts_grayscale_and_rgba_arrays():
    require_assets(ONNX)
    import cv2

    img = cv2.imread(str(image_path("bus")))
    with Runtime(ONNX) as rt:
        a = rt(img)
        b = rt(cv2.cvtColor(img, cv2.COLOR_BGR2BGRA))
        g = rt(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
    np.testing.assert_array_equal(a.boxes, b.boxes)
    assert 5 in g.class_ids  # a bus in grayscale is still a bus


def test_unreadable_images_name_their_path(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageReadError, match="broken.jpg"):
        read_image(bad)
    with pytest.raises(ImageReadError, match="image not found"):
        read_image(tmp_path / "missing.png")


def test_closed_runtime_refuses_to_run():
    require_assets(ONNX)
    rt = Runtime(ONNX)
    rt.close()
    rt.close()  # idempotent
    with pytest.raises(InputError, match="closed"):
        rt(np.zeros((10, 10, 3), np.uint8))


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read unreadable files")
def test_permission_denied_image(tmp_path):
    p = tmp_path / "secret.jpg"
    p.write_bytes(b"x")
    p.chmod(0)
    with pytest.raises(ImageReadError, match="secret.jpg"):
        read_image(p)


def test_atomic_writes_get_normal_permissions_and_leave_nothing_on_failure(tmp_path):
    from edgeseg.io import atomic_dir, atomic_write

    with atomic_write(tmp_path / "a.json") as tmp:
        tmp.write_text("{}")
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~_umask()
    with atomic_dir(tmp_path / "folder") as d:
        (d / "x").write_text("x")
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o777 & ~_umask()
    with pytest.raises(RuntimeError):
        with atomic_write(tmp_path / "b.json") as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "folder") as d:
            (d / "y").write_text("half")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "folder"]
    assert [p.name for p in (tmp_path / "folder").iterdir()] == ["x"]  # the old folder is untouched


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
