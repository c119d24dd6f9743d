"""The TFLite flatbuffer reader, and `edgeseg info` on Edge TPU-compiled models without libedgetpu.

The Edge TPU model is a small flatbuffer written here with the ``flatbuffers`` package (no
third-party model is shipped): an int8 input, an ``edgetpu-custom-op`` (what the Edge TPU compiler
leaves in place of the graph it maps to the TPU), then a CPU ``DEQUANTIZE`` and a float output.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Sequence

import numpy as np
import pytest
from click.testing import CliRunner

from _assets import MODELS, require_assets
from edgeseg.cli import main as cli
from edgeseg.errors import ModelLoadError
from edgeseg.tflite_file import BUILTIN_OPS, EDGETPU_CUSTOM_OP, list_ops, read_tflite

flatbuffers = pytest.importorskip("flatbuffers", reason="the flatbuffers package writes the test model")

INT8, FLOAT32 = 9, 0  # TensorType codes


def edgetpu_model(path: Path, custom_code: str = EDGETPU_CUSTOM_OP) -> Path:
    """A minimal TFLite file: input int8 (1,16,16,3) -> custom op -> int8 -> DEQUANTIZE -> float32."""
    b = flatbuffers.Builder(1024)

    def ints(vals: Sequence[int]) -> int:
        b.StartVector(4, len(vals), 4)
        for v in reversed(vals):
            b.PrependInt32(v)
        return b.EndVector()

    def tables(offs: List[int]) -> int:
        b.StartVector(4, len(offs), 4)
        for o in reversed(offs):
            b.PrependUOffsetTRelative(o)
        return b.EndVector()

    def quant(scale: float, zp: int) -> int:
        b.StartVector(4, 1, 4)
        b.PrependFloat32(scale)
        sv = b.EndVector()
        b.StartVector(8, 1, 8)
        b.PrependInt64(zp)
        zv = b.EndVector()
        b.StartObject(7)
        b.PrependUOffsetTRelativeSlot(2, sv, 0)
        b.PrependUOffsetTRelativeSlot(3, zv, 0)
        return b.EndObject()

    def tensor(name: str, dtype: int, q: int = 0) -> int:
        n, shape = b.CreateString(name), ints([1, 16, 16, 3])
        b.StartObject(8)
        b.PrependUOffsetTRelativeSlot(0, shape, 0)
        b.PrependInt8Slot(1, dtype, 0)
        b.PrependUint32Slot(2, 0, 0)
        b.PrependUOffsetTRelativeSlot(3, n, 0)
        if q:
            b.PrependUOffsetTRelativeSlot(4, q, 0)
        return b.EndObject()

    def operator(code: int, ins: Sequence[int], outs: Sequence[int]) -> int:
        i, o = ints(ins), ints(outs)
        b.StartObject(6)
        b.PrependUint32Slot(0, code, 0)
        b.PrependUOffsetTRelativeSlot(1, i, 0)
        b.PrependUOffsetTRelativeSlot(2, o, 0)
        return b.EndObject()

    def opcode(builtin: int, custom: str = "") -> int:
        c = b.CreateString(custom) if custom else 0
        b.StartObject(4)
        b.PrependInt8Slot(0, min(builtin, 127), 0)
        if c:
            b.PrependUOffsetTRelativeSlot(1, c, 0)
        b.PrependInt32Slot(2, 1, 1)
        b.PrependInt32Slot(3, builtin, 0)
        return b.EndObject()

    t = [tensor("images", INT8, quant(1 / 255, -128)), tensor("tpu_out", INT8, quant(0.05, 3)),
         tensor("output0", FLOAT32)]
    ops = [operator(0, [0], [1]), operator(1, [1], [2])]
    tv, ov = tables(t), tables(ops)
    iv, outv, name = ints([0]), ints([2]), b.CreateString("main")
    b.StartObject(5)
    b.PrependUOffsetTRelativeSlot(0, tv, 0)
    b.PrependUOffsetTRelativeSlot(1, iv, 0)
    b.PrependUOffsetTRelativeSlot(2, outv, 0)
    b.PrependUOffsetTRelativeSlot(3, ov, 0)
    b.PrependUOffsetTRelativeSlot(4, name, 0)
    sg = b.EndObject()
    codes = tables([opcode(BUILTIN_OPS.index("CUSTOM"), custom_code), opcode(BUILTIN_OPS.index("DEQUANTIZE"))])
    b.StartObject(0)
    buf = b.EndObject()
    sgs, bufs, desc = tables([sg]), tables([buf]), b.CreateString("edgeseg test model")
    b.StartObject(8)
    b.PrependUint32Slot(0, 3, 0)
    b.PrependUOffsetTRelativeSlot(1, codes, 0)
    b.PrependUOffsetTRelativeSlot(2, sgs, 0)
    b.PrependUOffsetTRelativeSlot(3, desc, 0)
    b.PrependUOffsetTRelativeSlot(4, bufs, 0)
    b.Finish(b.EndObject(), file_identifier=b"TFL3")
    path.write_bytes(bytes(b.Output()))
    return path


def test_reader_sees_the_edgetpu_op_and_the_cpu_ops(tmp_path):
    m = read_tflite(edgetpu_model(tmp_path / "m_edgetpu.tflite"))
    assert m.edgetpu and m.description == "edgeseg test model"
    assert [t.name for t in m.inputs] == ["images"] and [t.name for t in m.outputs] == ["output0"]
    assert m.inputs[0].dtype == "int8" and m.inputs[0].shape == (1, 16, 16, 3)
    assert m.inputs[0].scale == (pytest.approx(1 / 255),) and m.inputs[0].zero_point == (-128,)
    assert not m.outputs[0].quantized
    ops = list_ops(m)
    assert [(o.name, o.custom, o.input_dtypes, o.output_dtypes) for o in ops] == [
        (EDGETPU_CUSTOM_OP, True, ("int8",), ("int8",)), ("DEQUANTIZE", False, ("int8",), ("float32",))]
    assert [o.name for o in m.cpu_ops] == ["DEQUANTIZE"]


def test_reader_agrees_with_litert_on_a_real_model():
    path = MODELS / "yolov8n-seg-640-fullint8.tflite"
    require_assets(path)
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    it = litert.Interpreter(model_path=str(path))
    m = read_tflite(path)
    assert not m.edgetpu and len(m.ops) == len(it._get_ops_details())
    assert [o.name for o in m.ops] == [d["op_name"] for d in it._get_ops_details()]
    for ours, d in zip(m.inputs + m.outputs, it.get_input_details() + it.get_output_details()):
        assert ours.name == d["name"] and list(ours.shape) == d["shape"].tolist()
        assert ours.dtype == np.dtype(d["dtype"]).name
        assert ours.scale[0] == pytest.approx(d["quantization"][0]) and ours.zero_point[0] == d["quantization"][1]


@pytest.mark.parametrize("cut", [7, 40, 200, -20])
def test_truncated_or_broken_files_give_a_model_load_error(tmp_path, cut):
    data = edgetpu_model(tmp_path / "m.tflite").read_bytes()
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(data[:cut] if cut > 0 else data[:8] + b"\xff" * (len(data) - 8))
    with pytest.raises(ModelLoadError):
        read_tflite(bad)


@pytest.mark.parametrize("name", ["m_edgetpu.tflite", "compiled.tflite"])
def test_info_describes_an_edgetpu_model_without_libedgetpu(tmp_path, name):
    pytest.importorskip("ai_edge_litert", reason="needs the tflite extra")
    path = edgetpu_model(tmp_path / name)
    r = CliRunner().invoke(cli, ["info", "--model", str(path)])
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output and "Exception ignored" not in r.output and "_library" not in r.output
    assert "compiled for the Edge TPU" in r.output
    assert "images" in r.output and "output0" in r.output and "scale 0.00392" in r.output
    assert "CPU ops" in r.output and "DEQUANTIZE" in r.output
    d = json.loads(CliRunner().invoke(cli, ["info", "--model", str(path), "--json"]).output)
    assert d["tflite"]["edgetpu"] and d["tflite"]["cpu_ops"] == {"DEQUANTIZE": 1}
    # predict keeps the clear error
    r = CliRunner().invoke(cli, ["predict", "--model", str(path), "--source", str(path)])
    assert r.exit_code != 0 and "edgetpu" in r.output.lower() and "Traceback" not in r.output
