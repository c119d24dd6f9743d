"""The exporter and backend registries: one table each, read by `convert --help`, board profiles,
bench and the README; a new format (or backend) is one new file, which these tests drop into the
package's search path in a subprocess to prove it."""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeseg.cli import main
from edgeseg.converters.export.registry import Exporter, exporters, get_exporter, resolve_options
from edgeseg.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"
COCO_PT = ASSETS / "models" / "yolov8n-seg-coco.pt"
HAS_TORCH = importlib.util.find_spec("torch") is not None

TOY_EXPORTER = '''
"""A format that exists only in this test: ONNX written under another suffix."""
from edgeseg.converters.export.registry import HALF, Exporter, Option

SPICE = Option("spice", "how much spice (toy only)", int, "N")


def export_toy(job):
    from edgeseg.converters.export.onnx import torch_to_onnx

    with job.stage("toy onnx"):
        torch_to_onnx(job.net, job.im, job.path)
    job.meta["spice"] = job.options["spice"]


EXPORTER = Exporter(name="toy", title="Toy", suffix="_toy.onnx", description="a toy format for the registry test",
                    export=export_toy, options=(HALF, SPICE), defaults={"spice": 3}, backend="onnxruntime",
                    stages=1)
'''


def _run(code: str, extra_path: Path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter whose edgeseg.converters.export package also searches
    ``extra_path`` (as if the toy module were a file of the package)."""
    prelude = ("import edgeseg.converters.export as pkg\n"
               f"pkg.__path__.append({str(extra_path)!r})\n")
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=str(ROOT), timeout=600)


def test_table_loads_without_torch_and_convert_help_lists_every_format() -> None:
    code = ("import sys\n"
            "from click.testing import CliRunner\n"
            "from edgeseg.cli import main\n"
            "r = CliRunner().invoke(main, ['convert', '--help'])\n"
            "print(r.output)\n"
            "print('HEAVY', [m for m in ('torch', 'onnx', 'openvino', 'pnnx') if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=str(ROOT))
    assert "HEAVY []" in out.stdout, out.stdout
    choices = re.search(r"--to \[([^\]]+)\]", out.stdout).group(1).split("|")
    assert choices == list(exporters())
    for name, exp in exporters().items():
        assert re.search(rf"^\s+{name}\s+yolov8n-seg{re.escape(exp.suffix)}", out.stdout, re.M), (name, out.stdout)
    for flag in ("--half", "--dynamic", "--opset", "--simplify"):
        assert flag in out.stdout


def test_every_format_reaches_boards_bench_and_readme() -> None:
    from edgeseg.eval.bench import exports_for_backend
    from edgeseg.tools.profiles import convertible, known_formats

    table = exporters()
    assert list(table)[:4] == ["onnx", "openvino", "ncnn", "torchscript"]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    formats_section = readme.split("### Formats", 1)[1].split("\n### ", 1)[0]
    bench_map = exports_for_backend()
    for name, exp in table.items():
        assert convertible()[name] == exp.precisions and name in known_formats()
        if exp.bench:
            assert name in bench_map[exp.backend]
        assert f"| `{name}` |" in formats_section, f"README's convert format table lacks {name}"
    assert bench_map["onnxruntime"] == ["onnx"] and "torch" not in bench_map  # torch runs the .pt itself


def test_a_new_format_is_one_file(tmp_path: Path) -> None:
    (tmp_path / "toy.py").write_text(TOY_EXPORTER)
    code = """
        import json
        from click.testing import CliRunner
        from edgeseg.cli import main
        from edgeseg.eval.bench import exports_for_backend
        from edgeseg.tools.profiles import convertible, parse_profile, convert_gap
        from edgeseg.converters.export.registry import exporters
        help_text = CliRunner().invoke(main, ["convert", "--help"]).output
        prof = parse_profile({"name": "toyboard", "title": "t", "description": "d", "priority": 1,
                              "detect": {"system": ["Linux"]}, "formats": ["toy"], "backends": ["onnxruntime"],
                              "precision": "fp16", "imgsz": 320, "backend_options": {}, "camera": {},
                              "convert": {"to": "toy", "precision": "fp16"}})
        print(json.dumps({"help": help_text, "convertible": convertible().get("toy"), "gap": convert_gap(prof),
                          "bench": exports_for_backend()["onnxruntime"], "names": list(exporters())}))
    """
    out = _run(code, tmp_path)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert "toy" in got["names"]
    assert re.search(r"--to \[[^\]]*\|toy[|\]]", got["help"])
    assert re.search(r"^\s+toy\s+yolov8n-seg_toy\.onnx", got["help"], re.M)
    assert re.search(r"--spice N\s+how much spice \(toy only\) \(formats: toy\)", got["help"])
    assert got["convertible"] == ["fp32", "fp16"] and got["gap"] is None
    assert got["bench"] == ["onnx", "toy"]


@pytest.mark.skipif(not HAS_TORCH or not COCO_PT.is_file(), reason="needs torch and ../shared/assets/models/yolov8n-seg-coco.pt")
def test_a_new_format_exports_through_export_and_the_cli(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="running the toy artifact needs onnxruntime")
    plug = tmp_path / "plug"
    plug.mkdir()
    (plug / "toy.py").write_text(TOY_EXPORTER)
    code = f"""
        import json
        from click.testing import CliRunner
        from edgeseg import Runtime
        from edgeseg.cli import main
        from edgeseg.converters import export
        from edgeseg.errors import InputError
        out = export({str(COCO_PT)!r}, to="toy", imgsz=64, spice=7, out={str(tmp_path / 'a.onnx')!r}, progress=False)
        cli = CliRunner().invoke(main, ["convert", {str(COCO_PT)!r}, "--to", "toy", "--imgsz", "64", "--spice", "2",
                                        "--out", {str(tmp_path)!r}, "-q"])
        try:
            export({str(COCO_PT)!r}, to="toy", opset=17)
            refused = None
        except InputError as exc:
            refused = str(exc)
        with Runtime(out, backend="onnxruntime") as rt:
            print(json.dumps({{"out": str(out), "cli": cli.output, "code": cli.exit_code, "refused": refused,
                              "outputs": [s.name for s in rt.backend.outputs], "imgsz": list(rt.imgsz)}}))
    """
    res = _run(code, plug)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["out"] == str(tmp_path / "a.onnx") and got["outputs"] == ["output0", "output1"] and got["imgsz"] == [64, 64]
    assert got["code"] == 0 and str(tmp_path / "yolov8n-seg-coco_toy.onnx") in got["cli"]
    assert (tmp_path / "yolov8n-seg-coco_toy.onnx").is_file()
    assert got["refused"].startswith("opset applies to ONNX exports only, got opset=17 with to='toy'")


def test_a_public_module_without_exporter_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "helpers.py").write_text("X = 1\n")
    (tmp_path / "_private.py").write_text("raise RuntimeError('private helpers are never imported')\n")
    out = _run("from edgeseg.converters.export.registry import exporters\nexporters()\n", tmp_path)
    assert out.returncode != 0
    assert "helpers is a format module (no leading underscore) but defines no EXPORTER" in out.stderr
    assert "private helpers" not in out.stderr


@pytest.mark.parametrize("fmt,given,message", [
    ("onnx", {"spice": 1}, "unknown export option 'spice'"),
    ("openvino", {"opset": 17}, "opset applies to ONNX exports only, got opset=17 with to='openvino'"),
    ("ncnn", {"dynamic": True}, "dynamic applies to ONNX, OpenVINO, TorchScript exports only"),
    ("onnx", {"opset": 9}, "opset must be between 11 and 23, got 9"),
])
def test_options_are_checked_before_any_work(fmt: str, given: dict, message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        resolve_options(get_exporter(fmt), given)


def test_options_resolve_with_format_defaults() -> None:
    assert resolve_options(get_exporter("onnx"), {"half": False, "opset": None}) == {
        "half": False, "dynamic": False, "opset": 17, "simplify": False,
        "int8": False, "data": None, "calib_images": None, "val_data": None}
    assert resolve_options(get_exporter("ncnn"), {"half": True, "dynamic": False, "opset": None}) == {"half": True}
    with pytest.raises(InputError, match="unknown export format 'tflite2'; expected one of onnx, openvino, ncnn"):
        get_exporter("tflite2")


def test_exporter_declarations_are_checked() -> None:
    with pytest.raises(TypeError, match="lower-case"):
        Exporter(name="ONNX", title="x", suffix=".x", description="x", export=print)
    with pytest.raises(TypeError, match="defaults for options it does not take"):
        Exporter(name="x", title="x", suffix=".x", description="x", export=print, defaults={"opset": 1})


def test_every_runtimes_module_is_a_discovered_backend(tmp_path: Path) -> None:
    from edgeseg.backend import backend_classes, backend_modules

    files = sorted(p.stem for p in (ROOT / "runtimes").glob("*.py") if not p.name.startswith("_"))
    assert backend_modules() == [f"edgeseg.runtimes.{f}" for f in files]
    assert set(backend_classes()) == {"onnxruntime", "litert", "openvino", "ncnn", "coreml", "torch", "tensorrt", "paddle", "tensorflow"}
    # a new backend is one file in runtimes/: drop one on the package's search path
    (tmp_path / "toyrt.py").write_text(textwrap.dedent('''
        from edgeseg.backend import Backend, register

        @register
        class ToyBackend(Backend):
            name = "toyrt"
            suffixes = (".toy",)
            requires = ("json",)
            extra = "toy"
    '''))
    code = ("import edgeseg.runtimes as r\n"
            f"r.__path__.append({str(tmp_path)!r})\n"
            "from edgeseg.backend import backend_classes\n"
            "print(sorted(backend_classes()))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=str(ROOT))
    assert "'toyrt'" in out.stdout


def test_convert_help_via_cli_runner() -> None:
    r = CliRunner().invoke(main, ["convert", "--help"])
    assert r.exit_code == 0
    assert re.search(r"^\s+ncnn\s+yolov8n-seg_ncnn_model/ \(yolov8n-seg\.ncnn\.param", r.output, re.M), r.output


def test_int8_help_is_true_for_every_format() -> None:
    """--int8 means calibrated static int8 for some formats and weight-only int8 for CoreML: the help
    says which is which (it once said "calibrated on --data" for all)."""
    from edgeseg.converters.export.registry import export_options, option_help

    text = option_help("int8")
    takers = export_options()["int8"][1]
    groups = dict(part.split(": ", 1) for part in text[text.index("(") + 1:-2].split("; "))
    covered = [f for fmts in groups for f in fmts.split(", ")]
    assert sorted(covered) == sorted(takers)
    for fmts, note in groups.items():
        calibrated = all(exporters()[f].name != "coreml" for f in fmts.split(", "))
        assert ("calibrated on --data" in note) is calibrated, (fmts, note)
    assert "no calibration data" in groups["coreml"]
    help_text = " ".join(CliRunner().invoke(main, ["convert", "--help"]).output.split())
    assert "coreml: 8-bit weights only, fp16 compute, no calibration data" in help_text
