"""The CLI: every command teaches through --help; predict and info work as a user runs them."""
from __future__ import annotations

import json
import shutil

import click
import numpy as np
import pytest
from click.testing import CliRunner

from _assets import COCO8_VAL, MODELS, image_path, require_assets
from edgeseg.cli import main

ONNX = MODELS / "yolov8n-seg-320-int8dyn.onnx"

#: every top-level command users have; adding one to edgeseg.cli.COMMANDS means adding it here
EXPECTED_COMMANDS = ("bench", "boards", "convert", "data", "doctor", "info", "predict", "run", "train", "val", "verify")


def _walk(group: click.Group, ctx: click.Context, prefix=()):
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        yield prefix + (name,), cmd
        if isinstance(cmd, click.Group):
            yield from _walk(cmd, click.Context(cmd, parent=ctx, info_name=name), prefix + (name,))


def test_every_command_has_help_with_an_example():
    runner = CliRunner()
    ctx = click.Context(main, info_name="edgeseg")
    seen = []
    for path, cmd in _walk(main, ctx):
        seen.append(" ".join(path))
        assert cmd is not None, f"edgeseg {' '.join(path)} is listed but cannot be loaded"
        assert (cmd.help or "").strip(), f"edgeseg {' '.join(path)} has no help text"
        out = runner.invoke(main, [*path, "--help"])
        assert out.exit_code == 0, out.output
        assert "Example" in out.output, f"edgeseg {' '.join(path)} --help shows no example"
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.hidden:
                assert p.help, f"option {p.opts} of edgeseg {' '.join(path)} has no help"
    # the command list is explicit: a command whose module is missing or broken fails above
    assert set(main.list_commands(ctx)) == set(EXPECTED_COMMANDS)
    assert set(EXPECTED_COMMANDS) <= set(seen)


def test_top_level_help_and_version():
    runner = CliRunner()
    out = runner.invoke(main, ["--help"])
    assert out.exit_code == 0 and "predict" in out.output
    out = runner.invoke(main, ["--version"])
    assert out.exit_code == 0 and "edgeseg" in out.output


@pytest.mark.parametrize("model, layout, nc_names, quant", [
    ("yolov8n-seg-320-int8dyn.onnx", "raw", "0:person", "int8 (dynamic quantization"),
    ("yolov8n-seg-640-int8w.tflite", "raw", "0:class0", "int8 weights (dynamic range quantization)"),
    ("yolov8n-seg-640-fullint8.tflite", "raw", "0:class0", "full integer"),
])
def test_info_reports_layout_names_input_and_quantization(model, layout, nc_names, quant):
    path = MODELS / model
    require_assets(path)
    out = CliRunner().invoke(main, ["info", "--model", str(path)])
    assert out.exit_code == 0, out.output
    assert f"layout       {layout}: 80 classes, 32 mask coefficients" in out.output
    assert nc_names in out.output and quant in out.output
    out = CliRunner().invoke(main, ["info", "--model", str(path), "--json"])
    d = json.loads(out.output)
    assert d["output_layout"]["num_classes"] == 80 and d["output_layout"]["mask_dim"] == 32
    if model.endswith(".tflite"):
        assert d["input"]["layout"] == "NHWC" and d["output_layout"]["protos"]["layout"] == "NHWC"
        assert d["output_layout"]["boxes"] == "normalized"
        assert d["input"]["imgsz"] == [640, 640]
    else:
        assert d["input"]["layout"] == "NCHW" and d["output_layout"]["boxes"] == "pixels"
        assert d["names"]["5"] == "bus" and d["metadata"]["source"] == "onnx metadata"
    if "fullint8" in model:
        assert d["input"]["dtype"] == "int8" and "quantization" in d["input"]
        assert d["quantization"]["input_quantized"] and len(d["quantization"]["quantized_outputs"]) == 2


def test_predict_saves_annotated_images_and_json(tmp_path):
    require_assets(ONNX, COCO8_VAL)
    out_dir = tmp_path / "out"
    res = CliRunner().invoke(main, ["predict", "-m", str(ONNX), "-s", str(COCO8_VAL), "--save", str(out_dir),
                                    "--json", str(out_dir / "r.json")])
    assert res.exit_code == 0, res.output
    images = sorted(p.name for p in COCO8_VAL.glob("*.jpg"))
    assert sorted(p.name for p in out_dir.glob("*.jpg")) == images
    doc = json.loads((out_dir / "r.json").read_text())
    assert [r["path"].rsplit("/", 1)[1] for r in doc["results"]] == images
    det = doc["results"][0]["detections"][0]
    assert {"class_id", "class_name", "score", "box", "mask_rle"} <= set(det)
    assert isinstance(det["mask_rle"]["counts"], str)


def test_predict_polygons_to_stdout_with_class_filter():
    require_assets(ONNX)
    res = CliRunner().invoke(main, ["predict", "-m", str(ONNX), "-s", str(image_path("bus")), "--classes", "0",
                                    "--masks", "polygon", "--json", "-"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    dets = doc["results"][0]["detections"]
    assert len(dets) == 3 and {d["class_name"] for d in dets} == {"person"}
    poly = dets[0]["polygons"][0]
    assert len(poly) > 10 and all(len(pt) == 2 for pt in poly)


def test_predict_goes_on_after_an_unreadable_image_and_exits_nonzero(tmp_path):
    require_assets(ONNX)
    src = tmp_path / "imgs"
    src.mkdir()
    shutil.copy(image_path("bus"), src / "a_bus.jpg")
    (src / "b_broken.jpg").write_bytes(b"garbage")
    shutil.copy(image_path("zidane"), src / "c_zidane.jpg")
    res = CliRunner().invoke(main, ["predict", "-m", str(ONNX), "-s", str(src), "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 1
    assert "1 input(s) failed" in res.output and "b_broken.jpg" in res.output
    doc = json.loads((tmp_path / "r.json").read_text())
    assert len(doc["results"]) == 2


def test_predict_video_every_frame(tmp_path):
    require_assets(ONNX)
    import cv2

    img = cv2.resize(cv2.imread(str(image_path("bus"))), (320, 426))
    video = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 426))
    for i in range(5):
        w.write(np.roll(img, i * 4, axis=1))
    w.release()
    res = CliRunner().invoke(main, ["predict", "-m", str(ONNX), "-s", str(video), "--save", str(tmp_path / "o"),
                                    "--json", str(tmp_path / "v.json")])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "v.json").read_text())
    assert [r["frame"] for r in doc["results"]] == [0, 1, 2, 3, 4]
    cap = cv2.VideoCapture(str(tmp_path / "o" / "clip.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5


def test_cli_errors_are_clean(tmp_path):
    res = CliRunner().invoke(main, ["predict", "-m", str(tmp_path / "nope.onnx"), "-s", str(tmp_path)])
    assert res.exit_code == 1 and "Error:" in res.output and "Traceback" not in res.output
    from edgeseg.default_model import default_model

    model = default_model()  # any model does: the embedded one, so this runs without ../shared
    res = CliRunner().invoke(main, ["predict", "-m", str(model), "-s", str(tmp_path / "x.jpg")])
    assert res.exit_code == 1 and "x.jpg: no such file" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(main, ["info", "-m", str(model), "--imgsz", "abc"])
    assert res.exit_code == 2 and "expected an integer" in res.output
