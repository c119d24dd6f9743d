"""Static int8 ONNX (onnxruntime.quantization, QDQ) and int8 OpenVINO (NNCF) exports: the split
layout of the TFLite int8 export, the decode tail float, the float-vs-int8 report in the metadata,
and the artifacts run through ``Runtime``.

The real COCO checkpoint is converted once per format at a small size with few calibration images
(the 320 px / 64-image accuracy numbers are in README, measured with the same code); a freshly built
two-class model on synthetic images covers the same path without ../shared."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from _assets import ASSETS, IMAGES, MODELS, require_assets

pytest.importorskip("onnxruntime", reason="int8 ONNX needs pip install 'edgeseg[convert]' (onnxruntime)")
pytest.importorskip("torch", reason="exports need pip install 'edgeseg[convert]' (torch)")

PT = MODELS / "yolov8n-seg-coco.pt"
COCO8 = ASSETS / "datasets" / "coco8-seg.yaml"
COCO128 = ASSETS / "datasets" / "coco128-seg.yaml"
IMGSZ = 256
CALIB = 16
needs_nncf = pytest.mark.skipif(importlib.util.find_spec("nncf") is None,
                                reason="OpenVINO --int8 needs nncf: pip install 'edgeseg[convert]'")


def _export(out: Path, **kw) -> Path:
    from edgeseg.converters import export

    return export(PT, out=out, imgsz=IMGSZ, int8=True, data=COCO128, calib_images=CALIB, val_data=COCO8,
                  progress=False, **kw)


@pytest.fixture(scope="module")
def onnx_int8(tmp_path_factory):
    require_assets(PT, COCO8, COCO128)
    return _export(tmp_path_factory.mktemp("int8") / "n_int8.onnx", to="onnx")


@pytest.fixture(scope="module")
def openvino_int8(tmp_path_factory):
    require_assets(PT, COCO8, COCO128)
    if importlib.util.find_spec("nncf") is None:
        pytest.skip("OpenVINO --int8 needs nncf: pip install 'edgeseg[convert]'")
    return _export(tmp_path_factory.mktemp("int8") / "n_int8_openvino_model", to="openvino")


def _onnx_meta(path: Path) -> dict:
    import onnx

    from edgeseg.metadata import parse_value

    return {p.key: parse_value(p.value) for p in onnx.load(str(path)).metadata_props}


def _check_report(meta: dict) -> None:
    assert meta["output_layout"] == "split" and meta["quantization"] == "int8"
    assert meta["int8"]["calibration"]["images"] == CALIB and meta["int8"]["float_parts"] == ["decode"]
    acc = meta["int8_accuracy"]  # float vs int8 val on coco8's val split, written into the artifact
    assert acc["data"] == str(COCO8) and acc["imgsz"] == [IMGSZ, IMGSZ]
    for key in ("float", "int8"):
        assert 0 < acc[key]["mask_map"] <= 1 and 0 < acc[key]["box_map"] <= 1
    assert acc["mask_map_drop"] == pytest.approx(acc["float"]["mask_map"] - acc["int8"]["mask_map"], abs=1e-4)


def _check_runs(path: Path) -> None:
    from edgeseg import Runtime

    with Runtime(path) as rt:
        lay = rt.layout
        assert lay.kind == "split" and lay.nc == 80 and lay.nm == 32 and lay.boxes_normalized is True
        assert set(lay.split) == {"boxes", "scores", "coefs"} and lay.protos == "protos" and not lay.protos_nhwc
        assert np.dtype(rt.input_spec.dtype) == np.float32 and rt.input_spec.shape == (1, 3, IMGSZ, IMGSZ)
        res = rt(str(IMAGES / "bus.jpg"))
        names = {res.names[int(c)] for c in res.class_ids}
        vehicle = {"bus", "truck", "train"}  # the 256 px model calibrated on 16 images may call the bus a truck
        assert names & vehicle and "person" in names
        bus = int(np.argmax([s if res.names[int(c)] in vehicle else 0 for s, c in zip(res.scores, res.class_ids)]))
        x1, y1, x2, y2 = res.boxes[bus]
        assert x2 - x1 > 600 and y2 - y1 > 350  # the bus spans the 810x1080 photo's width (source pixels)
        assert res.masks is not None and len(res.masks) == len(res)


def test_onnx_int8_is_qdq_per_channel_with_a_float_decode_tail(onnx_int8):
    import onnx

    from edgeseg.converters.export.onnx import SPLIT_NAMES

    g = onnx.load(str(onnx_int8)).graph
    assert [o.name for o in g.output] == list(SPLIT_NAMES)
    ops = [n.op_type for n in g.node]
    assert ops.count("QuantizeLinear") > 50 and ops.count("DequantizeLinear") > 100 and "QLinearConv" not in ops
    inits = {t.name: t for t in g.initializer}
    conv_w = [n.input[1] for n in g.node if n.op_type == "Conv"]
    producer = {o: n for n in g.node for o in n.output}
    dq = [producer[w] for w in conv_w if w in producer and producer[w].op_type == "DequantizeLinear"]
    assert len(dq) == len(conv_w)  # every conv weight is stored int8
    assert all(inits[d.input[0]].data_type == onnx.TensorProto.INT8 for d in dq if d.input[0] in inits)
    scale_sizes = [int(np.prod(inits[d.input[1]].dims)) for d in dq if d.input[1] in inits]
    assert max(scale_sizes) > 1  # per-channel scales
    # the DFL softmax and the box decode after it stay float: nothing after the softmax is quantized
    softmax = next(n for n in g.node if n.op_type == "Softmax")
    consumers = {i: n for n in g.node for i in n.input}
    assert consumers[softmax.output[0]].op_type != "QuantizeLinear"
    assert producer["boxes"].op_type != "DequantizeLinear"  # boxes come out of the float decode
    # activations are uint8 (U8S8: onnxruntime's fast x86 path; int8 activations ran at 0.69x fp32)
    q_zero = [inits[n.input[2]] for n in g.node if n.op_type == "QuantizeLinear" and n.input[2] in inits]
    act_zero = [z for z in q_zero if z.name not in {d.input[2] for d in dq if len(d.input) > 2}]
    assert act_zero and all(z.data_type == onnx.TensorProto.UINT8 for z in act_zero)


def test_onnx_int8_metadata_and_report(onnx_int8):
    meta = _onnx_meta(onnx_int8)
    _check_report(meta)
    assert meta["names"][0] == "person" and meta["imgsz"] == [IMGSZ, IMGSZ]
    assert meta["int8"]["format"] == "QDQ" and meta["int8"]["activations"] == "8 (uint8)"


def test_onnx_int8_runs_through_runtime(onnx_int8):
    from edgeseg import Runtime

    _check_runs(onnx_int8)
    with Runtime(onnx_int8) as rt:
        assert "QDQ" in rt.info["backend_details"]["weights"]


@needs_nncf
def test_openvino_int8_has_fake_quantize_and_a_float_decode_tail(openvino_int8):
    import openvino as ov

    m = ov.Core().read_model(str(openvino_int8 / f"{openvino_int8.name[:-len('_openvino_model')]}.xml"))
    types = [op.get_type_name() for op in m.get_ops()]
    assert types.count("FakeQuantize") > 50
    softmax = next(op for op in m.get_ops() if op.get_type_name() == "Softmax")
    assert softmax.input_value(0).get_node().get_type_name() != "FakeQuantize"
    assert [p.get_any_name() for p in m.outputs] == ["boxes", "scores", "coefs", "protos"]


@needs_nncf
def test_openvino_int8_metadata_report_and_runtime(openvino_int8):
    from edgeseg.metadata import read_sidecar

    meta = read_sidecar(openvino_int8)
    _check_report(meta)
    assert meta["int8"]["quantizer"] == "nncf.quantize" and meta["int8"]["ignored_ops"] > 5
    _check_runs(openvino_int8)


# ----------------------------------------------------------------------- without ../shared


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A freshly built two-class YOLOv8n-seg and a synthetic dataset of 64 px images."""
    from edgeseg.converters.checkpoint import new_model, save_checkpoint
    from edgeseg.eval.datasets.synth import synth_dataset

    root = tmp_path_factory.mktemp("tiny")
    names = {0: "circle", 1: "rectangle"}
    pt = save_checkpoint(new_model("yolov8-seg", "n", 2, names, imgsz=64), root / "tiny.pt")
    rep = synth_dataset(root / "synth", images=6, imgsz=64, seed=3, classes=2, val_fraction=0.34)
    return pt, Path(rep["yaml"])


@pytest.mark.parametrize("fmt", ["onnx", pytest.param("openvino", marks=needs_nncf)])
def test_tiny_model_int8_on_synthetic_images(tiny, tmp_path, fmt):
    from edgeseg import Runtime
    from edgeseg.converters import export

    pt, data = tiny
    suffix = ".onnx" if fmt == "onnx" else "_openvino_model"
    out = export(pt, to=fmt, imgsz=64, int8=True, data=data, calib_images=3, out=tmp_path / f"t{suffix}",
                 progress=False)
    with Runtime(out) as rt:
        assert rt.layout.kind == "split" and rt.layout.nc == 2 and rt.layout.nm == 32
        outs = rt.backend.run({rt.input_spec.name: np.zeros((1, 3, 64, 64), np.float32)})
        assert outs["boxes"].shape == (1, 84, 4) and outs["scores"].shape == (1, 84, 2)
        assert outs["protos"].shape == (1, 32, 16, 16)
        assert float(outs["scores"].min()) >= 0 and float(outs["scores"].max()) <= 1  # after the sigmoid
        assert rt.meta.quantization == "int8"
        acc = rt.meta.raw["int8_accuracy"]  # the synthetic val split scored float vs int8
        assert {"float", "int8"} <= set(acc) and acc["data"] == str(data)
        assert rt.meta.raw["int8"]["calibration"]["images"] == 3


def test_int8_without_data_is_a_clear_error(tiny, tmp_path):
    from click.testing import CliRunner

    from edgeseg.cli import main
    from edgeseg.converters import export
    from edgeseg.errors import InputError

    pt, data = tiny
    for fmt in ("onnx", "openvino"):
        with pytest.raises(InputError, match=f"int8 {'ONNX' if fmt == 'onnx' else 'OpenVINO'} needs calibration images"):
            export(pt, to=fmt, int8=True, out=tmp_path / "x.onnx" if fmt == "onnx" else tmp_path / "x_openvino_model",
                   progress=False)
    res = CliRunner().invoke(main, ["convert", str(pt), "--to", "onnx", "--int8", "--out", str(tmp_path / "y.onnx")])
    assert res.exit_code != 0 and "--data" in res.output and "Traceback" not in res.output
    with pytest.raises(InputError, match="apply to int8"):
        export(pt, to="onnx", data=data, out=tmp_path / "z.onnx", progress=False)
    with pytest.raises(InputError, match="static shapes"):
        export(pt, to="onnx", int8=True, dynamic=True, data=data, out=tmp_path / "z.onnx", progress=False)
    with pytest.raises(InputError, match="not found"):
        export(pt, to="onnx", int8=True, data=tmp_path / "missing.yaml", out=tmp_path / "z.onnx", progress=False)
    assert not list(tmp_path.iterdir())  # nothing written


def test_openvino_int8_without_nncf_names_the_extra(tiny, tmp_path, monkeypatch):
    from edgeseg.converters import export
    from edgeseg.errors import ConversionError

    pt, data = tiny
    monkeypatch.setitem(sys.modules, "nncf", None)  # what an environment without nncf looks like to import
    with pytest.raises(ConversionError, match=r"nncf.*pip install 'edgeseg\[convert\]'"):
        export(pt, to="openvino", int8=True, data=data, out=tmp_path / "x_openvino_model", progress=False)
    assert not list(tmp_path.iterdir())
