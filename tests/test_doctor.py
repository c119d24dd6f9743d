"""``edgeseg doctor`` runs everywhere without raising: this machine, fixture trees, blocked vendors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeseg.cli import main
from edgeseg.tools.doctor import EDGETPU_LIBRARY, _edgetpu, collect, format_report, list_cameras, opencv_build_facts

REPO = Path(__file__).resolve().parents[1]
VENDORS = ["onnxruntime", "openvino", "ncnn", "ai_edge_litert", "tflite_runtime", "coremltools", "torch", "paddle", "tensorflow", "cv2", "tensorrt"]


def fixture_root(tmp: Path) -> Path:
    (tmp / "proc" / "device-tree").mkdir(parents=True)
    (tmp / "proc" / "device-tree" / "model").write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\x00")
    usb = tmp / "sys" / "bus" / "usb" / "devices" / "2-1"
    usb.mkdir(parents=True)
    (usb / "idVendor").write_text("18d1\n")
    (usb / "idProduct").write_text("9302\n")
    (tmp / "dev").mkdir()
    for n, name in ((10, "rpivid"), (0, "USB Camera: HD Webcam"), (2, "")):
        (tmp / "dev" / f"video{n}").write_text("")
        if name:
            (tmp / "sys" / "class" / "video4linux" / f"video{n}").mkdir(parents=True)
            (tmp / "sys" / "class" / "video4linux" / f"video{n}" / "name").write_text(name + "\n")
    (tmp / "dev" / "video-legacy").write_text("")  # not a video device node name
    return tmp


def test_collect_on_this_machine() -> None:
    rep = collect()
    json.dumps(rep)  # plain data
    for section in ("python", "os", "edgeseg", "board", "backends", "opencv", "cameras", "converters"):
        assert "error" not in rep[section], (section, rep[section])
    backends = {b["name"]: b for b in rep["backends"]}
    ort = pytest.importorskip("onnxruntime")
    assert backends["onnxruntime"]["available"] and backends["onnxruntime"]["version"] == ort.__version__
    assert "CPUExecutionProvider" in rep["delegates"]["onnxruntime_providers"]
    for b in backends.values():
        assert b["available"] or b["reason"]  # a missing backend always says why
    assert set(rep["opencv"]) >= {"version", "GUI", "GStreamer", "FFmpeg"}
    assert rep["board"]["name"]  # every machine matches at least a generic profile (x86 or ARM)
    text = format_report(rep)
    assert "Backends" in text and "onnxruntime (onnx)" in text and "Edge TPU library" in text


def test_fixture_root(tmp_path: Path) -> None:
    root = fixture_root(tmp_path)
    rep = collect(root, system="Linux", machine="aarch64")
    assert rep["board"]["name"] == "coral-usb" and rep["board"]["also"] == ["raspberry-pi-5", "generic-arm"]
    assert rep["delegates"]["coral_usb"] == ["18d1:9302 Coral USB Accelerator"]
    assert [(c["device"], c["name"]) for c in rep["cameras"]["devices"]] == [
        ("/dev/video0", "USB Camera: HD Webcam"), ("/dev/video2", ""), ("/dev/video10", "rpivid")]
    text = format_report(rep)
    assert "coral-usb" in text and "/dev/video0" in text and "USB Camera: HD Webcam" in text
    assert list_cameras(tmp_path / "nothing") == []


@pytest.mark.parametrize("system,library", sorted(EDGETPU_LIBRARY.items()))
def test_edgetpu_library_table(system: str, library: str) -> None:
    got = _edgetpu(system)
    assert got["library"] == library
    assert got["found"] or "install the Edge TPU runtime" in got["reason"]


def test_unknown_os() -> None:
    rep = collect(system="Plan9", machine="mips")
    assert rep["delegates"]["edgetpu"] == {"library": None, "found": False,
                                           "reason": "no Edge TPU runtime exists for Plan9"}
    assert rep["board"]["name"] is None
    assert "note" in rep["cameras"]
    assert "no profile matches" in format_report(rep)


def test_opencv_build_facts() -> None:
    info = textwrap.dedent("""
      GUI:                           GTK3
        GTK+:                        YES (ver 3.24.38)
      Video I/O:
        FFMPEG:                      YES
        GStreamer:                   YES (1.22.0)
        v4l/v4l2:                    YES (linux/videodev2.h)
    """)
    assert opencv_build_facts(info) == {"GUI": "GTK3", "GStreamer": "YES (1.22.0)", "FFmpeg": "YES",
                                        "V4L2": "YES (linux/videodev2.h)"}
    assert opencv_build_facts("")["GUI"] == "unknown"


# installed as sitecustomize.py on PYTHONPATH, so the child processes in which doctor probes each
# vendor's version see the same blocked vendors as the doctor process itself
BLOCKER = """
import importlib.abc, importlib.machinery, os, sys
MODE, NAMES = os.environ.get("EDGESEG_BLOCK_MODE"), set(os.environ.get("EDGESEG_BLOCK", "").split(","))
class Broken(importlib.abc.Loader):
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        raise RuntimeError(f"{module.__name__} is broken on purpose")
class Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in NAMES:
            return importlib.machinery.ModuleSpec(name, Broken())
        return None
if MODE == "missing":
    for n in NAMES:
        sys.modules[n] = None  # import raises ImportError, find_spec raises ValueError
elif MODE == "broken":
    sys.meta_path.insert(0, Finder())
"""


@pytest.mark.parametrize("mode", ["missing", "broken"])
def test_doctor_with_vendors_blocked(tmp_path: Path, mode: str) -> None:
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, EDGESEG_BLOCK_MODE=mode, EDGESEG_BLOCK=",".join(VENDORS),
               PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-c", "from edgeseg.cli import main; main(['doctor', *__import__('sys').argv[1:]])"]
    for extra in (["--json"], []):
        proc = subprocess.run(cmd + extra, cwd=str(tmp_path), capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
    rep = json.loads(subprocess.run(cmd + ["--json"], cwd=str(tmp_path), capture_output=True, text=True, timeout=300,
                                    env=env).stdout)
    backends = {b["name"]: b for b in rep["backends"]}
    assert backends, "backends must still be listed"
    for b in backends.values():
        assert not b["available"] and b["reason"]
        if mode == "broken":
            assert "broken on purpose" in b["reason"]
        else:
            assert "not installed" in b["reason"] and "pip install 'edgeseg[" in b["reason"]
    assert rep["delegates"]["onnxruntime_providers"] in (None, {"error": "RuntimeError: onnxruntime is broken on purpose"})
    assert "error" in rep["opencv"]
    assert rep["converters"]["available"] is (mode == "broken")  # found by find_spec, never imported


def test_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(main, ["doctor", "--root", str(fixture_root(tmp_path))])
    assert res.exit_code == 0, res.output
    assert "Backends" in res.output and "/dev/video0" in res.output
    res = runner.invoke(main, ["doctor", "--help"])
    assert res.exit_code == 0 and "edgeseg doctor --json" in res.output


def test_vendor_versions_are_probed_in_a_child_process() -> None:
    """doctor imports every vendor to report its version; PaddlePaddle imported after TensorFlow
    (which coremltools imports when present) crashed the whole process. Probing each vendor in a
    child process keeps this process clean and turns a crash into a reason."""
    import sys as _sys

    from edgeseg.backend import backend_classes

    before = set(_sys.modules)
    for cls in backend_classes().values():
        if cls.installed():
            cls.vendor_version()
    leaked = {m.split(".")[0] for m in set(_sys.modules) - before} & {"paddle", "tensorflow", "torch", "openvino", "coremltools"}
    assert not leaked, leaked
