"""TensorRT: the ``.engine`` metadata header (Ultralytics' layout) read and written on real files, and
``convert --to engine`` / ``predict --model x.engine`` failing before any work, naming what is missing,
where there is no tensorrt or no GPU (here). The build and the GPU run are tested where both exist."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from _assets import IMAGES, MODELS, ROOT, require_assets
from edgeseg.cli import main
from edgeseg.errors import BackendUnavailableError, ConversionError, ModelLoadError
from edgeseg.runtimes.tensorrt import (MAX_METADATA_BYTES, PIP_LINE, TensorRTBackend, cuda_device_problem,
                                       engine_header, missing_for_tensorrt, read_engine_header, write_engine)

PT = MODELS / "yolov8n-seg-coco.pt"
HAVE_TRT = not missing_for_tensorrt()
META = {"names": {0: "person", 1: "bicycle"}, "imgsz": [320, 320], "stride": 32, "task": "segment",
        "description": "edgeseg export, ünïcode kept as escapes"}


def _plan(n: int = 4096) -> bytes:
    """Stand-in plan bytes (TensorRT plans start with the magic ``ftrt``), random after it."""
    return b"ftrt" + np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8).tobytes()


# ---------------------------------------------------------------------------------------- header


def test_header_round_trip_on_a_file(tmp_path: Path) -> None:
    path = tmp_path / "m.engine"
    plan = _plan()
    write_engine(path, META, plan)
    meta, offset = read_engine_header(path)
    assert meta == json.loads(json.dumps(META))  # JSON: class ids become strings, as in Ultralytics' files
    data = path.read_bytes()
    assert data[offset:] == plan and offset == 4 + int.from_bytes(data[:4], "little")


def test_ultralytics_reader_reads_our_header(tmp_path: Path) -> None:
    """What Ultralytics' TensorRT backend does with a file (its two lines), on a file we wrote."""
    path = tmp_path / "m.engine"
    write_engine(path, META, _plan())
    with open(path, "rb") as f:
        meta_len = int.from_bytes(f.read(4), byteorder="little")
        metadata = json.loads(f.read(meta_len).decode("utf-8"))
        rest = f.read()
    assert metadata["names"]["1"] == "bicycle" and metadata["imgsz"] == [320, 320]
    assert rest == _plan()


def test_a_bare_plan_has_no_metadata(tmp_path: Path) -> None:
    path = tmp_path / "trtexec.engine"
    path.write_bytes(_plan())
    assert read_engine_header(path) == ({}, 0)


@pytest.mark.parametrize("case, data, message", [
    ("too short", b"\x02\x00", "too short"),
    ("length beyond the file", (1000).to_bytes(4, "little") + b'{"a": 1}', "declares 1000 bytes"),
    ("negative length", (-5).to_bytes(4, "little", signed=True) + b'{"a": 1}xxxx', "declares -5 bytes"),
    ("huge length", (MAX_METADATA_BYTES + 1).to_bytes(4, "little") + b"{" + b" " * 64, "declares"),
    ("not JSON", (6).to_bytes(4, "little") + b"{nope}plan", "not UTF-8 JSON"),
    ("not UTF-8", (4).to_bytes(4, "little") + b"{\xff\xfe}plan", "not UTF-8 JSON"),
    ("no plan after it", (8).to_bytes(4, "little") + b'{"a": 1}', "no engine after it"),
])
def test_bad_headers_are_refused_with_the_reason(tmp_path: Path, case: str, data: bytes, message: str) -> None:
    path = tmp_path / "bad.engine"
    path.write_bytes(data)
    with pytest.raises(ModelLoadError, match=message):
        read_engine_header(path)


def test_only_an_object_starts_a_header(tmp_path: Path) -> None:
    path = tmp_path / "arr.engine"
    body = b'{"a": 1}'
    path.write_bytes(len(b"[1, 2]").to_bytes(4, "little") + b"[1, 2]" + b"plan")
    assert read_engine_header(path) == ({}, 0)  # does not start like a header: a bare plan
    path.write_bytes(len(body).to_bytes(4, "little") + body + b"plan")
    assert read_engine_header(path) == ({"a": 1}, 4 + len(body))


def test_header_is_ascii_and_length_counts_bytes() -> None:
    head = engine_header(META)
    n = int.from_bytes(head[:4], "little")
    assert n == len(head) - 4 and head[4:].isascii()
    assert json.loads(head[4:])["description"].endswith("ünïcode kept as escapes")


# ----------------------------------------------------------------------------- what is missing


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt and a CUDA device are present: the error paths cannot happen")
def test_missing_pieces_are_named() -> None:
    missing = " | ".join(missing_for_tensorrt())
    if cuda_device_problem() is not None:
        assert "a CUDA device (" in missing
    if "'tensorrt'" in missing:
        assert PIP_LINE in missing
    assert missing


def test_the_cuda_probe_asks_the_driver() -> None:
    problem = cuda_device_problem()
    if not any(Path(d, "libcuda.so.1").exists() for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib")):
        assert problem is not None and "libcuda" in problem
    else:  # pragma: no cover - a machine with the NVIDIA driver
        assert problem is None or "CUDA" in problem


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt and a CUDA device are present: the error paths cannot happen")
def test_convert_to_engine_fails_first_and_keeps_the_output(tmp_path: Path) -> None:
    """Before the checkpoint is read (a garbage file is given) and before torch is imported; the
    existing output stays byte for byte."""
    bad = tmp_path / "not-a-checkpoint.pt"
    bad.write_bytes(b"garbage")
    out = tmp_path / "mine.engine"
    out.write_bytes(b"user's file")
    before = out.stat().st_mtime_ns
    code = ("import sys\n"
            "from click.testing import CliRunner\n"
            "from edgeseg.cli import main\n"
            f"r = CliRunner().invoke(main, ['convert', {str(bad)!r}, '--to', 'engine', '--half', '--out', {str(out)!r}])\n"
            "print('EXIT', r.exit_code)\n"
            "print(r.output)\n"
            "print('TORCH', 'torch' in sys.modules)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), timeout=120)
    assert "EXIT 1" in res.stdout, res.stdout + res.stderr
    assert "TensorRT export" in res.stdout and "this machine lacks" in res.stdout
    if "'tensorrt'" in res.stdout:
        assert PIP_LINE in res.stdout
    if cuda_device_problem() is not None:
        assert "a CUDA device" in res.stdout
    assert "checkpoint" not in res.stdout.lower() and "TORCH False" in res.stdout
    assert out.read_bytes() == b"user's file" and out.stat().st_mtime_ns == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.engine", "not-a-checkpoint.pt"]


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt and a CUDA device are present: the error paths cannot happen")
def test_export_api_raises_conversion_error() -> None:
    from edgeseg.converters import export

    with pytest.raises(ConversionError, match="this machine lacks"):
        export("does-not-matter.pt", to="engine")


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt and a CUDA device are present: the error paths cannot happen")
def test_predict_engine_fails_first_naming_what_is_missing(tmp_path: Path) -> None:
    require_assets(IMAGES / "bus.jpg")
    model = tmp_path / "m.engine"
    write_engine(model, META, _plan())
    save = tmp_path / "out"
    res = CliRunner().invoke(main, ["predict", "--model", str(model), "--source", str(IMAGES / "bus.jpg"),
                                    "--save", str(save)])
    assert res.exit_code == 1, res.output
    assert "TensorRT engines (.engine) run only with the tensorrt runtime on an NVIDIA GPU" in res.output
    for piece in [PIP_LINE] * ("'tensorrt'" in res.output) + ["a CUDA device"] * (cuda_device_problem() is not None):
        assert piece in res.output
    assert not save.exists()
    with pytest.raises(BackendUnavailableError, match="this machine lacks"):
        from edgeseg import Runtime

        Runtime(model)
    assert TensorRTBackend.handles(model) and not TensorRTBackend.handles(tmp_path / "m.onnx")


def test_doctor_lists_the_backend() -> None:
    res = CliRunner().invoke(main, ["doctor"])
    line = next(ln for ln in res.output.splitlines() if ln.strip().startswith("tensorrt (engine)"))
    assert ("ok" in line) == TensorRTBackend.installed()


# --------------------------------------------------------------------- where TensorRT can run


needs_trt = pytest.mark.skipif(not HAVE_TRT, reason="TensorRT build and run need " + (
    "; ".join(missing_for_tensorrt()) or "nothing"))


@needs_trt
@pytest.mark.parametrize("flags", [[], ["--half"]])
def test_engine_builds_and_matches_onnx(tmp_path: Path, flags) -> None:  # pragma: no cover - needs a GPU
    require_assets(PT, IMAGES / "bus.jpg")
    from edgeseg import Runtime

    eng, onx = tmp_path / "n.engine", tmp_path / "n.onnx"
    for to, out in (("engine", eng), ("onnx", onx)):
        res = CliRunner().invoke(main, ["convert", str(PT), "--to", to, "--imgsz", "320", "-q", "--out", str(out)]
                                 + (flags if to == "engine" else []))
        assert res.exit_code == 0, res.output
    meta, _ = read_engine_header(eng)
    assert meta["engine"]["precision"] == ("fp16" if flags else "fp32") and meta["names"]["0"] == "person"
    with Runtime(eng) as rt, Runtime(onx) as ref:
        a, b = rt(str(IMAGES / "bus.jpg")), ref(str(IMAGES / "bus.jpg"))
        assert rt.info["backend"] == "tensorrt"
        assert sorted(a.class_ids.tolist()) == sorted(b.class_ids.tolist())
        assert np.abs(np.sort(a.boxes, 0) - np.sort(b.boxes, 0)).max() < (3.0 if flags else 1.0)


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt is present: the build would run (see the GPU test)")
@pytest.mark.parametrize("half", [False, True])
def test_the_onnx_half_of_the_build_runs_and_a_failure_leaves_nothing(tmp_path: Path, half: bool) -> None:
    """Past the environment check (called directly), the exporter makes its ONNX graph here for real;
    it stops at ``import tensorrt`` inside the TensorRT stage, and the user's file stays as it was."""
    pytest.importorskip("torch", reason="the ONNX export needs pip install 'edgeseg[convert]'")
    require_assets(PT)
    import contextlib

    from edgeseg.converters.checkpoint import load_model
    from edgeseg.converters.export import _export, get_exporter

    seen = []

    @contextlib.contextmanager
    def stage(name):
        seen.append(name)
        yield

    out = tmp_path / "n.engine"
    out.write_bytes(b"user's file")
    opts = {"half": half, "int8": False, "data": None, "calib_images": None, "val_data": None}
    with pytest.raises(ModuleNotFoundError, match="tensorrt"):
        _export(load_model(PT), get_exporter("engine"), 64, opts, out, stage)
    assert seen[-1].startswith("TensorRT: parse ONNX") and "onnx.checker" in seen
    assert ("float16 conversion (onnxconverter-common)" in seen) is half
    assert out.read_bytes() == b"user's file" and sorted(p.name for p in tmp_path.iterdir()) == ["n.engine"]


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt and a CUDA device are present: info loads the engine itself")
def test_info_describes_an_engine_from_its_header(tmp_path: Path) -> None:
    """Without TensorRT or a GPU, `info` reads the metadata header instead of failing, and says
    why the engine was not loaded; a bare plan is named as one; a corrupt header still fails."""
    model = tmp_path / "m.engine"
    write_engine(model, META, _plan())
    res = CliRunner().invoke(main, ["info", "--model", str(model)])
    assert res.exit_code == 0, res.output
    assert "TensorRT engine, plan 0.0 MB, Ultralytics metadata header" in res.output
    assert "not loaded:" in res.output and "this machine lacks" in res.output
    assert "task         segment" in res.output and "imgsz        [320, 320]" in res.output
    assert "names        2 classes (0: person, 1: bicycle)" in res.output
    assert "Traceback" not in res.output
    js = json.loads(CliRunner().invoke(main, ["info", "--model", str(model), "--json"]).output)
    assert js["engine"]["metadata"]["names"] == {"0": "person", "1": "bicycle"}
    assert js["engine"]["plan_bytes"] == len(_plan())
    ultra = tmp_path / "ultra.engine"  # Ultralytics' header keeps the precision in its export args
    write_engine(ultra, {**META, "batch": 1, "args": {"half": True, "int8": False}}, _plan())
    res = CliRunner().invoke(main, ["info", "--model", str(ultra)])
    assert res.exit_code == 0 and "precision    fp16" in res.output and "batch        1" in res.output, res.output
    ours = tmp_path / "ours.engine"
    write_engine(ours, {**META, "quantization": "int8", "engine": {"precision": "int8", "gpu": "NVIDIA A2",
                                                                  "tensorrt": "10.13"}}, _plan())
    res = CliRunner().invoke(main, ["info", "--model", str(ours)])
    assert "precision    int8" in res.output and "built for    gpu NVIDIA A2 tensorrt 10.13" in res.output, res.output
    bare = tmp_path / "bare.engine"
    bare.write_bytes(_plan())
    res = CliRunner().invoke(main, ["info", "--model", str(bare)])
    assert res.exit_code == 0 and "no metadata header (a bare plan)" in res.output, res.output
    bad = tmp_path / "bad.engine"
    bad.write_bytes((40).to_bytes(4, "little") + b"{" + _plan()[:8])
    res = CliRunner().invoke(main, ["info", "--model", str(bad)])
    assert res.exit_code != 0 and "metadata header declares 40 bytes" in res.output, res.output
