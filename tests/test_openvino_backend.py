"""The OpenVINO backend on real IR and ONNX files made from the COCO checkpoint."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

ov = pytest.importorskip("openvino", reason="openvino is not installed (pip install 'edgeseg[openvino]')")

from edgeseg.backend import select_backend  # noqa: E402
from edgeseg.errors import InputError, ModelLoadError  # noqa: E402
from edgeseg.runtimes.openvino import OpenVINOBackend  # noqa: E402

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
COCO_PT = ASSETS / "models" / "yolov8n-seg-coco.pt"
BUS = ASSETS / "images" / "bus.jpg"
IMGSZ = 160


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """An IR folder and an ONNX file of the COCO checkpoint at 160 px (made once)."""
    pytest.importorskip("torch", reason="making the test IR needs the convert extra")
    if not COCO_PT.is_file():
        pytest.skip(f"test asset {COCO_PT} not found; see ../shared/assets/README.md")
    from edgeseg.converters import export

    d = tmp_path_factory.mktemp("ov")
    return {
        "ir": export(COCO_PT, to="openvino", imgsz=IMGSZ, out=d / "n_openvino_model", progress=False),
        "onnx": export(COCO_PT, to="onnx", imgsz=IMGSZ, out=d / "n.onnx", progress=False),
    }


def _anchors(s: int) -> int:
    return sum((s // k) ** 2 for k in (8, 16, 32))


@pytest.mark.parametrize("which", ["folder", "xml", "onnx"])
def test_opens_folder_xml_and_onnx(models, which):
    path = {"folder": models["ir"], "xml": models["ir"] / "n.xml", "onnx": models["onnx"]}[which]
    be = OpenVINOBackend(path)
    assert [(s.name, s.shape, s.dtype) for s in be.inputs] == [("images", (1, 3, IMGSZ, IMGSZ), np.float32)]
    assert [(s.name, s.shape) for s in be.outputs] == [
        ("output0", (1, 116, _anchors(IMGSZ))),
        ("output1", (1, 32, IMGSZ // 4, IMGSZ // 4)),
    ]
    # the metadata the file itself embeds: IR rt_info / ONNX metadata_props
    assert be.metadata["task"] == "segment" and "'bus'" in be.metadata["names"]
    assert be.metadata["imgsz"] == f"[{IMGSZ}, {IMGSZ}]"
    out = be.run({"images": np.random.default_rng(0).random((1, 3, IMGSZ, IMGSZ), dtype=np.float32)})
    assert out["output0"].shape == (1, 116, _anchors(IMGSZ)) and out["output0"].dtype == np.float32
    be.close()


def test_f32_by_default_and_matches_onnxruntime(models):
    ort = pytest.importorskip("onnxruntime")
    x = np.random.default_rng(1).random((1, 3, IMGSZ, IMGSZ), dtype=np.float32)
    ref = ort.InferenceSession(str(models["onnx"]), providers=["CPUExecutionProvider"]).run(None, {"images": x})
    be = OpenVINOBackend(models["ir"], threads=1)
    assert be.describe()["precision"] == "f32"
    got = be.run({"images": x})
    assert np.abs(got["output0"][:, :4] - ref[0][:, :4]).max() < 1e-2  # box pixels
    assert np.abs(got["output0"][:, 4:] - ref[0][:, 4:]).max() < 1e-4
    assert np.abs(got["output1"] - ref[1]).max() < 1e-4
    fast = OpenVINOBackend(models["ir"], performance=True)
    assert fast.describe()["precision"].startswith("auto")
    assert np.isfinite(fast.run({"images": x})["output0"]).all()


def test_runtime_uses_it_for_ir_and_onnxruntime_for_onnx(models):
    assert select_backend(models["ir"]).name == "openvino"
    assert select_backend(models["onnx"]).name == "onnxruntime"  # priority 10 beats 20
    assert select_backend(models["onnx"], "openvino").name == "openvino"
    from edgeseg import Runtime

    with Runtime(models["ir"]) as rt:
        res = rt(str(BUS))
        assert rt.backend.name == "openvino" and "bus" in res.class_names
        assert rt.names[0] == "person"


def _corrupt(src: Path, dst: Path, kind: str) -> Path:
    dst.mkdir()
    xml, binf = dst / "m.xml", dst / "m.bin"
    data_xml, data_bin = (src / "n.xml").read_bytes(), (src / "n.bin").read_bytes()
    if kind == "truncated-xml":
        xml.write_bytes(data_xml[: len(data_xml) // 3])
        binf.write_bytes(data_bin)
    elif kind == "truncated-bin":
        xml.write_bytes(data_xml)
        binf.write_bytes(data_bin[:1000])
    elif kind == "random-xml":
        xml.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
        binf.write_bytes(data_bin)
    elif kind == "missing-bin":
        xml.write_bytes(data_xml)
    return xml


@pytest.mark.parametrize(
    "kind,message",
    [
        ("truncated-xml", "could not read the model"),
        ("truncated-bin", "could not read the model"),
        ("random-xml", "could not read the model"),
        ("missing-bin", "weights file m.bin is missing"),
    ],
)
def test_corrupt_ir_is_a_model_load_error(models, tmp_path, kind, message):
    xml = _corrupt(models["ir"], tmp_path / kind, kind)
    with pytest.raises(ModelLoadError, match=message):
        OpenVINOBackend(xml)


@pytest.mark.parametrize("data", [b"", b"\x00\x01garbage" * 100])
def test_corrupt_onnx_is_a_model_load_error(tmp_path, data):
    p = tmp_path / "bad.onnx"
    p.write_bytes(data)
    with pytest.raises(ModelLoadError, match="bad.onnx"):
        OpenVINOBackend(p)


def test_folder_errors(models, tmp_path):
    with pytest.raises(ModelLoadError, match="no OpenVINO .xml or .onnx model"):
        OpenVINOBackend(tmp_path)
    two = tmp_path / "two"
    shutil.copytree(models["ir"], two)
    shutil.copy(two / "n.xml", two / "m.xml")
    with pytest.raises(ModelLoadError, match="several models"):
        OpenVINOBackend(two)


def test_option_errors(models):
    with pytest.raises(InputError, match="device 'NOSUCH' is not available"):
        OpenVINOBackend(models["ir"], device="NOSUCH")
    with pytest.raises(InputError, match="unknown options"):
        OpenVINOBackend(models["ir"], precision="f16")
    be = OpenVINOBackend(models["ir"])
    with pytest.raises(InputError, match="missing inputs"):
        be.run({"x": np.zeros((1, 3, IMGSZ, IMGSZ), np.float32)})
    from edgeseg import Runtime

    # a wrong shape is bad input, refused by Runtime.infer before OpenVINO sees it
    with Runtime(models["ir"]) as rt, pytest.raises(InputError, match="expects shape"):
        rt.infer({"images": np.zeros((1, 3, IMGSZ + 32, IMGSZ), np.float32)})
