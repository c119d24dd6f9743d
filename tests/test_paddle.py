"""PaddlePaddle: `convert --to paddle` (x2paddle from ONNX) of the real COCO checkpoint at 640 runs
through Runtime with the `paddle` backend, finds the bus and the people on bus.jpg and passes
`edgeseg verify`'s fp32 limits against the .pt; missing packages and broken model folders give
edgeseg errors, not vendor tracebacks; nothing of Paddle is imported by `import edgeseg`, the
backend registry, doctor or `convert --help`. The export is made once per session."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from _assets import ASSETS, COCO8_VAL, IMAGES, MODELS, ROOT
from edgeseg.cli import main
from edgeseg.errors import BackendUnavailableError, ConversionError, InputError, ModelLoadError

COCO_PT = MODELS / "yolov8n-seg-coco.pt"
BUS = IMAGES / "bus.jpg"
IMGSZ = 640
PADDLE_MODULES = ("paddle", "x2paddle")


def _need_toolchain() -> None:
    for module, extra in (("torch", "convert-paddle"), ("onnx", "convert-paddle"), ("onnxslim", "convert-paddle"),
                          ("x2paddle", "convert-paddle"), ("paddle", "paddle")):
        pytest.importorskip(module, reason=f"the paddle export and backend need {module}: pip install 'edgeseg[{extra}]'")
    if not COCO_PT.is_file() or not COCO8_VAL.is_dir():
        pytest.skip(f"test assets not found under {ASSETS}; see ../shared/assets/README.md")


@pytest.fixture(scope="session")
def paddle_model(tmp_path_factory) -> Path:
    """`edgeseg convert yolov8n-seg-coco.pt --to paddle --imgsz 640`, once per session."""
    _need_toolchain()
    out = tmp_path_factory.mktemp("paddle") / "n640_paddle_model"
    r = CliRunner().invoke(main, ["convert", str(COCO_PT), "--to", "paddle", "--imgsz", str(IMGSZ), "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert str(out) in r.output
    return out


def test_export_folder_holds_the_inference_model_and_the_metadata_of_every_format(paddle_model):
    import yaml

    from edgeseg.converters.checkpoint import load_model
    from edgeseg.converters.export import export_metadata

    files = sorted(str(p.relative_to(paddle_model)) for p in paddle_model.rglob("*"))
    assert files == ["inference_model", "inference_model/model.json", "inference_model/model.pdiparams", "metadata.yaml"]
    meta = yaml.safe_load((paddle_model / "metadata.yaml").read_text())
    loaded = load_model(COCO_PT)
    onnx_keys = export_metadata(loaded, (IMGSZ, IMGSZ), half=False, dynamic=False, fmt="onnx").keys()
    assert list(meta) == list(onnx_keys)  # the same keys, in the same order, as the other formats
    assert meta["names"][0] == "person" and meta["names"][79] == "toothbrush" and meta["imgsz"] == [IMGSZ, IMGSZ]
    assert meta["args"]["format"] == "paddle" and meta["quantization"] == "fp32" and meta["output_layout"] == "raw"
    assert meta["source_sha256"] == loaded.sha256 and meta["stride"] == 32 and meta["task"] == "segment"


def test_runtime_runs_the_export_on_bus(paddle_model):
    from edgeseg import Runtime

    with Runtime(paddle_model) as rt:
        assert rt.backend.name == "paddle" and rt.imgsz == (IMGSZ, IMGSZ)
        assert [s.shape for s in rt.backend.inputs] == [(1, 3, IMGSZ, IMGSZ)]
        assert sorted(s.shape for s in rt.backend.outputs) == [(1, 32, 160, 160), (1, 116, 8400)]
        assert rt.meta.source.startswith("paddle metadata") and rt.meta.quantization == "fp32"
        assert rt.layout.kind == "raw" and rt.layout.nc == 80 and rt.layout.nm == 32
        res = rt(str(BUS))
    names = res.class_names
    assert names.count("bus") == 1 and names.count("person") >= 3
    bus = res.boxes[names.index("bus")]
    assert bus[2] - bus[0] > 600  # the bus spans most of the 810 px wide photo
    assert res.masks is not None and (res.masks.areas() > 1000).all()
    # the program file itself, and its folder, open the same model (Ultralytics' layout: metadata two levels up)
    with Runtime(paddle_model / "inference_model" / "model.json") as rt:
        assert rt.backend.name == "paddle" and rt.names[5] == "bus"


def test_export_passes_verify_fp32_limits_against_the_pt(paddle_model):
    args = ["verify", str(COCO_PT), str(paddle_model), "--json", "--images", str(BUS),
            "--images", str(IMAGES / "zidane.jpg"), "--images", str(COCO8_VAL)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report["passed"] and report["precision"] == "fp32" and len(report["images"]) == 6
    for im in report["images"]:
        assert im["matched"] >= 1 and im["min_mask_iou"] >= 0.99, im
        assert im["max_box_error"] <= 1.0 and im["max_score_error"] <= 0.005, im


def _broken(src: Path, tmp_path: Path, name: str, damage) -> Path:
    dst = tmp_path / name
    shutil.copytree(src, dst)
    damage(dst / "inference_model")
    return dst


@pytest.mark.parametrize("case,damage,message", [
    ("garbled-program", lambda d: (d / "model.json").write_text("not json {"),
     "Paddle Inference could not load the model"),
    ("truncated-program", lambda d: (d / "model.json").write_bytes((d / "model.json").read_bytes()[:5000]),
     "Paddle Inference could not load the model"),
    ("truncated-weights", lambda d: (d / "model.pdiparams").write_bytes((d / "model.pdiparams").read_bytes()[:100000]),
     "Paddle Inference could not load the model"),
    ("empty-weights", lambda d: (d / "model.pdiparams").write_bytes(b""), "model.pdiparams: file is empty"),
    ("no-weights", lambda d: (d / "model.pdiparams").unlink(), "unsupported model format"),
])
def test_corrupt_model_folder_is_an_edgeseg_error(paddle_model, tmp_path, case, damage, message):
    from edgeseg import Runtime

    bad = _broken(paddle_model, tmp_path, case, damage)
    with pytest.raises(ModelLoadError, match=message):
        Runtime(bad)
    r = CliRunner().invoke(main, ["info", "--model", str(bad)])
    assert r.exit_code == 1 and message.split(":")[-1].strip() in r.output and "Traceback" not in r.output


def test_backend_options_are_checked(paddle_model):
    import paddle

    from edgeseg import Runtime

    with pytest.raises(InputError, match="device must be 'cpu', 'gpu' or 'gpu:N', got 'tpu'"):
        Runtime(paddle_model, backend="paddle", device="tpu")
    with pytest.raises(InputError, match="unknown options \\['spice'\\]"):
        Runtime(paddle_model, backend="paddle", spice=1)
    if not paddle.device.is_compiled_with_cuda():
        with pytest.raises(InputError, match="needs a CUDA build of PaddlePaddle \\(paddlepaddle-gpu\\)"):
            Runtime(paddle_model, backend="paddle", device="gpu")


def test_missing_packages_name_the_pip_line(paddle_model, tmp_path, monkeypatch):
    """With x2paddle (or paddle) not importable, convert and Runtime say which extra to install."""
    from edgeseg import Runtime
    from edgeseg.converters import export

    monkeypatch.setitem(sys.modules, "x2paddle", None)  # find_spec then reports it missing
    with pytest.raises(ConversionError, match=r"pip install 'edgeseg\[convert-paddle\]'"):
        export(COCO_PT, to="paddle", out=tmp_path / "m_paddle_model", progress=False)
    r = CliRunner().invoke(main, ["convert", str(COCO_PT), "--to", "paddle", "--out", str(tmp_path / "m_paddle_model")])
    assert r.exit_code == 1 and "pip install 'edgeseg[convert-paddle]'" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "m_paddle_model").exists()
    monkeypatch.setitem(sys.modules, "paddle", None)
    with pytest.raises(BackendUnavailableError, match=r"pip install 'edgeseg\[paddle\]'"):
        Runtime(paddle_model)


def test_x2paddle_failure_is_a_conversion_error(tmp_path):
    """A graph x2paddle cannot map fails in the child process and comes back as one clean error."""
    _need_toolchain()
    import onnx
    from onnx import TensorProto, helper

    from edgeseg.converters.export.paddle import _convert

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 8, 8])
    graph = helper.make_graph([helper.make_node("Celu", ["images"], ["out"])], "g", [x], [y])  # no x2paddle mapping
    path = tmp_path / "celu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(ConversionError, match=r"^paddle export: x2paddle: .*\(ONNX ops x2paddle cannot convert: Celu\)$"):
        _convert(path, tmp_path / "work", tmp_path / "x.npy", tmp_path / "out.npz")


def test_parity_check_compares_by_shape_and_refuses_a_drift():
    from edgeseg.converters.export.paddle import PARITY_ATOL, _check_parity

    rng = np.random.default_rng(1)
    pred, protos = rng.random((1, 116, 64), np.float32), rng.random((1, 32, 16, 16), np.float32)
    _check_parity({"fetch_name_0": protos + PARITY_ATOL / 2, "fetch_name_1": pred}, [pred, protos])  # order-free
    with pytest.raises(ConversionError, match=r"output fetch_name_0 \[1, 116, 64\] differs from the torch model"):
        _check_parity({"fetch_name_0": pred + 3 * PARITY_ATOL, "fetch_name_1": protos}, [pred, protos])
    with pytest.raises(ConversionError, match="do not match the torch outputs"):
        _check_parity({"fetch_name_0": pred}, [pred, protos])


def test_paddle_is_imported_by_nothing_light():
    """`import edgeseg`, the backend registry and doctor's listing, `convert --help` and the
    exporter table never import paddle or x2paddle; only the paddle extras depend on them."""
    code = ("import sys, edgeseg\n"
            "import edgeseg.backend as b\n"
            "b.backend_classes(); st = {s.name: s for s in b.backend_status()}\n"
            "from click.testing import CliRunner\n"
            "from edgeseg.cli import main\n"
            "assert CliRunner().invoke(main, ['convert', '--help']).exit_code == 0\n"
            "from edgeseg.converters.export.registry import exporters\n"
            "exporters()\n"
            f"print([m for m in {PADDLE_MODULES!r} if m in sys.modules], 'paddle' in st)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=str(ROOT))
    assert out.stdout.strip() == "[] True", out.stdout + out.stderr
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        pytest.skip("reading pyproject.toml needs tomllib (Python 3.11+)")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["paddle"] == ["paddlepaddle>=3.0"]
    assert any(d.startswith("x2paddle") for d in extras["convert-paddle"])
    for name, deps in extras.items():
        if name not in ("paddle", "convert-paddle"):
            assert not [d for d in deps if d.startswith(("paddle", "x2paddle"))], name


def test_paddle_after_tensorflow_is_refused_not_a_crash(paddle_model):
    """Importing PaddlePaddle 3.3 after TensorFlow 2.21 kills the process with SIGSEGV (the suite's
    doctor test died this way once both toolchains were installed): the backend refuses first."""
    pytest.importorskip("tensorflow", reason="TensorFlow not installed ([convert-tf])")
    code = ("import sys, tensorflow\nfrom edgeseg import Runtime\nfrom edgeseg.errors import BackendUnavailableError\n"
            "try:\n    Runtime(sys.argv[1])\nexcept BackendUnavailableError as e:\n    print('refused:', e)\n")
    r = subprocess.run([sys.executable, "-c", code, str(paddle_model)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "refused:" in r.stdout and "TensorFlow is already imported" in r.stdout
