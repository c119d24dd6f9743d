"""CoreML backend: loading (spec, metadata, shapes) on real coremltools models; predict off macOS.

CoreML prediction needs macOS: here the tests check that models load, report their tensors and
metadata, and that ``run`` raises a clear error off macOS (and really predicts on macOS).
"""
from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import pytest

ct = pytest.importorskip("coremltools", reason="coremltools is not installed (pip install 'edgeseg[coreml]')")

from edgeseg.backend import select_backend  # noqa: E402
from edgeseg.errors import BackendUnavailableError, InputError, ModelLoadError  # noqa: E402
from edgeseg.runtimes.coreml import CoreMLBackend  # noqa: E402

ON_MAC = platform.system() == "Darwin"


def _program():
    from coremltools.converters.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 3, 8, 8))])
    def prog(images):
        doubled = mb.mul(x=images, y=2.0, name="protos")
        flat = mb.reshape(x=doubled, shape=[1, 3, 64], name="output0")
        return flat, doubled

    return prog


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("coreml")
    prog = _program()
    pkg = ct.convert(prog, convert_to="mlprogram", compute_precision=ct.precision.FLOAT32,
                     minimum_deployment_target=ct.target.macOS13)
    pkg.user_defined_metadata.update({"names": "{0: 'person', 1: 'bicycle'}", "imgsz": "[8, 8]", "stride": "32",
                                      "task": "segment"})
    pkg.short_description = "tiny test model"
    pkg.save(str(d / "tiny.mlpackage"))
    nn = ct.convert(_program(), convert_to="neuralnetwork",
                    inputs=[ct.ImageType(name="images", shape=(1, 3, 8, 8), scale=1 / 255.0)])
    nn.user_defined_metadata["imgsz"] = "8"
    nn.save(str(d / "tiny.mlmodel"))
    return {"package": d / "tiny.mlpackage", "mlmodel": d / "tiny.mlmodel", "dir": d}


def test_mlpackage_loads_with_specs_and_metadata(models: dict) -> None:
    assert select_backend(models["package"]) is CoreMLBackend
    be = CoreMLBackend(models["package"], compute_units="cpu_only")
    assert [(s.name, s.shape, s.dtype) for s in be.inputs] == [("images", (1, 3, 8, 8), np.dtype(np.float32))]
    assert {s.name: s.shape for s in be.outputs} == {"output0": (1, 3, 64), "protos": (1, 3, 8, 8)}
    assert be.metadata["names"] == "{0: 'person', 1: 'bicycle'}" and be.metadata["task"] == "segment"
    assert be.metadata["description"] == "tiny test model"
    info = be.describe()
    assert info["model_type"] == "mlProgram" and info["compute_units"] == "CPU_ONLY"
    from edgeseg.metadata import parse_metadata

    meta = parse_metadata(be.metadata, "coreml")
    assert meta.names == {0: "person", 1: "bicycle"} and meta.imgsz == (8, 8)


def test_mlmodel_with_image_input(models: dict) -> None:
    be = CoreMLBackend(models["mlmodel"])
    assert [(s.name, s.shape) for s in be.inputs] == [("images", (1, 3, 8, 8))]
    assert be.describe()["model_type"] == "neuralNetwork"
    assert be.metadata["imgsz"] == "8"
    pil = pytest.importorskip("PIL.Image", reason="Pillow is not installed")
    x = np.random.default_rng(0).random((1, 3, 8, 8), dtype=np.float32)
    img = be._to_image("images", x)
    assert isinstance(img, pil.Image) and img.size == (8, 8) and img.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(img), np.rint(x[0].transpose(1, 2, 0) * 255).astype(np.uint8))


def test_folder_holding_one_model(models: dict, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(models["package"], tmp_path / "export" / "m.mlpackage")
    be = CoreMLBackend(tmp_path / "export")
    assert be.path.name == "m.mlpackage"


@pytest.mark.skipif(ON_MAC, reason="off-macOS behaviour")
def test_predict_off_macos_says_why(models: dict) -> None:
    be = CoreMLBackend(models["package"])
    with pytest.raises(BackendUnavailableError, match=f"only run models on macOS; this is {platform.system()}"):
        be.run({"images": np.zeros((1, 3, 8, 8), np.float32)})


@pytest.mark.skipif(not ON_MAC, reason="CoreML predicts only on macOS")
def test_predict_on_macos(models: dict) -> None:  # pragma: no cover - not run on Linux CI
    be = CoreMLBackend(models["package"])
    x = np.random.default_rng(0).random((1, 3, 8, 8), dtype=np.float32)
    out = be.run({"images": x})
    np.testing.assert_allclose(out["protos"], 2 * x, rtol=1e-3)
    np.testing.assert_allclose(out["output0"], 2 * x.reshape(1, 3, 64), rtol=1e-3)


def test_corrupt_and_wrong_files(tmp_path: Path) -> None:
    garbage = tmp_path / "bad.mlmodel"
    garbage.write_bytes(b"not a protobuf" * 20)
    with pytest.raises(ModelLoadError, match="coremltools could not load"):
        CoreMLBackend(garbage)
    empty = tmp_path / "empty.mlmodel"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="file is empty"):
        CoreMLBackend(empty)
    fake_pkg = tmp_path / "fake.mlpackage"
    fake_pkg.mkdir()
    with pytest.raises(ModelLoadError, match="Manifest.json"):
        CoreMLBackend(fake_pkg)
    with pytest.raises(ModelLoadError, match="model not found"):
        CoreMLBackend(tmp_path / "missing.mlpackage")
    (tmp_path / "none").mkdir()
    with pytest.raises(ModelLoadError, match="expected one .mlpackage or .mlmodel"):
        CoreMLBackend(tmp_path / "none")


def test_bad_options(models: dict) -> None:
    with pytest.raises(InputError, match="compute_units must be one of"):
        CoreMLBackend(models["package"], compute_units="TPU")
    with pytest.raises(InputError, match="unknown options"):
        CoreMLBackend(models["package"], delegate="x")
