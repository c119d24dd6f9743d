"""Board profiles: packaged data, validation, detection on fixture trees, apply_profile, CLI."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional

import pytest
import yaml
from click.testing import CliRunner

from edgeseg.cli import main
from edgeseg.errors import InputError
from edgeseg.tools.profiles import (
    BACKENDS,
    apply_profile,
    convert_command,
    detect,
    detect_all,
    gather_facts,
    get_profile,
    load_profile,
    load_profiles,
    parse_profile,
)

EXPECTED_BOARDS = {
    "raspberry-pi-4", "raspberry-pi-5", "jetson-nano", "jetson-orin-nano", "coral-usb",
    "coral-dev-board", "intel-openvino", "apple-silicon", "generic-x86", "generic-arm",
}

X86_FLAGS = "fpu vme de pse tsc msr sse sse2 ssse3 sse4_1 sse4_2 avx avx2"
ARM_FEATURES = "fp asimd evtstrm crc32 cpuid"


def make_tree(root: Path, *, model: Optional[str] = None, files: tuple = (), usb: tuple = (),
              vendor: Optional[str] = None, flags: Optional[str] = None) -> Path:
    """A fake system root: /proc/device-tree/model, /proc/cpuinfo, /sys/bus/usb/devices, /etc files."""
    if model is not None:
        (root / "proc" / "device-tree").mkdir(parents=True)
        (root / "proc" / "device-tree" / "model").write_bytes(model.encode() + b"\x00")
    if vendor is not None or flags is not None:
        (root / "proc").mkdir(parents=True, exist_ok=True)
        lines = []
        for cpu in range(2):
            lines.append(f"processor\t: {cpu}")
            if vendor:
                lines.append(f"vendor_id\t: {vendor}")
            if flags:
                lines.append(f"{'flags' if vendor else 'Features'}\t: {flags}")
            lines.append("")
        (root / "proc" / "cpuinfo").write_text("\n".join(lines))
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_text("# R32 (release), REVISION: 7.1\n")
    devices = root / "sys" / "bus" / "usb" / "devices"
    devices.mkdir(parents=True)
    # a root hub that must not match anything, then the requested devices
    for i, ident in enumerate(("1d6b:0002",) + tuple(usb)):
        d = devices / f"1-{i}"
        d.mkdir()
        v, p = ident.split(":")
        (d / "idVendor").write_text(v + "\n")
        (d / "idProduct").write_text(p + "\n")
    (devices / "1-0:1.0").mkdir()  # an interface folder without ids
    return root


# board expected, fixture tree, platform.system(), platform.machine()
DETECT_CASES: List[tuple] = [
    ("raspberry-pi-4", dict(model="Raspberry Pi 4 Model B Rev 1.4", flags=ARM_FEATURES), "Linux", "aarch64"),
    ("raspberry-pi-4", dict(model="Raspberry Pi 400 Rev 1.0"), "Linux", "armv7l"),
    ("raspberry-pi-5", dict(model="Raspberry Pi 5 Model B Rev 1.0", flags=ARM_FEATURES + " asimdhp"), "Linux", "aarch64"),
    ("jetson-nano", dict(model="NVIDIA Jetson Nano Developer Kit", files=("etc/nv_tegra_release",)), "Linux", "aarch64"),
    ("jetson-orin-nano", dict(model="NVIDIA Jetson Orin Nano Developer Kit", files=("etc/nv_tegra_release",)),
     "Linux", "aarch64"),
    ("coral-usb", dict(model="Raspberry Pi 4 Model B Rev 1.4", usb=("1a6e:089a",)), "Linux", "aarch64"),
    ("coral-usb", dict(vendor="GenuineIntel", flags=X86_FLAGS, usb=("18d1:9302",)), "Linux", "x86_64"),
    ("coral-dev-board", dict(model="Freescale i.MX8MQ Phanbell"), "Linux", "aarch64"),
    ("intel-openvino", dict(vendor="GenuineIntel", flags=X86_FLAGS), "Linux", "x86_64"),
    ("apple-silicon", dict(), "Darwin", "arm64"),
    ("generic-x86", dict(vendor="AuthenticAMD", flags=X86_FLAGS), "Linux", "x86_64"),
    ("generic-x86", dict(), "Windows", "AMD64"),
    ("generic-arm", dict(model="Radxa ROCK 5B", flags=ARM_FEATURES), "Linux", "aarch64"),
    # a Jetson device tree without the L4T release file is not recognised as a Jetson
    ("generic-arm", dict(model="NVIDIA Jetson Nano Developer Kit"), "Linux", "aarch64"),
    (None, dict(), "Linux", "riscv64"),
]


def test_packaged_profiles_are_the_expected_boards() -> None:
    profiles = load_profiles()
    assert set(profiles) == EXPECTED_BOARDS
    for prof in profiles.values():
        assert prof.source.startswith("edgeseg.boards/")
        assert set(prof.backend_options) <= set(BACKENDS)
        assert prof.backends and prof.formats and prof.imgsz % 32 == 0


def test_repo_files_match_packaged_data() -> None:
    repo_boards = Path(__file__).resolve().parents[1] / "boards"
    from_repo = load_profiles(repo_boards)
    assert {n: p.to_dict() for n, p in from_repo.items()} == {n: p.to_dict() for n, p in load_profiles().items()}


def test_every_profile_has_a_detection_case() -> None:
    assert {c[0] for c in DETECT_CASES if c[0]} == EXPECTED_BOARDS


@pytest.mark.parametrize("expected,tree,system,machine", DETECT_CASES,
                         ids=[f"{c[0]}-{c[3]}-{i}" for i, c in enumerate(DETECT_CASES)])
def test_detect_fixture_tree(tmp_path: Path, expected: Optional[str], tree: Dict, system: str, machine: str) -> None:
    facts = gather_facts(make_tree(tmp_path, **tree), system=system, machine=machine)
    found = detect(facts)
    if expected is None:
        assert found is None
        return
    assert found is not None and found.profile.name == expected
    assert found.matched and found.reasons and all(isinstance(r, str) for r in found.reasons)


def test_coral_usb_on_pi_also_reports_the_host(tmp_path: Path) -> None:
    root = make_tree(tmp_path, model="Raspberry Pi 5 Model B Rev 1.0", usb=("18d1:9302",))
    matched = [d.profile.name for d in detect_all(gather_facts(root, "Linux", "aarch64")) if d.matched]
    assert matched == ["coral-usb", "raspberry-pi-5", "generic-arm"]


def test_facts_read_from_tree(tmp_path: Path) -> None:
    root = make_tree(tmp_path, model="Raspberry Pi 5 Model B Rev 1.0", usb=("1A6E:089A",),
                     vendor="GenuineIntel", flags="sse4_2 avx2")
    facts = gather_facts(root, system="Linux", machine="aarch64")
    assert facts.device_tree_model == "Raspberry Pi 5 Model B Rev 1.0"  # trailing NUL stripped
    assert facts.usb_ids == {"1d6b:0002", "1a6e:089a"}  # lower-cased
    assert facts.cpu_vendor == "GenuineIntel" and {"sse4_2", "avx2"} <= facts.cpu_flags


def test_detect_on_this_machine_does_not_raise() -> None:
    facts = gather_facts()
    results = detect_all(facts)
    assert len(results) == len(EXPECTED_BOARDS)


def _valid() -> dict:
    return yaml.safe_load((Path(__file__).resolve().parents[1] / "boards" / "raspberry-pi-4.yaml").read_text())


BAD_PROFILES = [
    ("missing key 'formats'", lambda d: d.pop("formats")),
    ("'imgsz' must be a int", lambda d: d.update(imgsz="320")),
    ("positive multiple of 32", lambda d: d.update(imgsz=300)),
    ("'backends' must be a non-empty list", lambda d: d.update(backends=["tensorflow"])),
    ("'formats' must be a non-empty list", lambda d: d.update(formats=[])),
    ("'precision' must be one of", lambda d: d.update(precision="bf16")),
    ("'threads' must be a positive integer", lambda d: d.update(threads=0)),
    ("unknown detect rule", lambda d: d["detect"].update(kernel=["6.1"])),
    ("detect.usb_ids must look like", lambda d: d["detect"].update(usb_ids=["1a6e-089a"])),
    ("detect.machine must be a non-empty list", lambda d: d["detect"].update(machine="aarch64")),
    ("unknown keys", lambda d: d.update(gpu=True)),
    ("backend_options keys must be backend names", lambda d: d["backend_options"].update(tensorrt={})),
    ("camera.fps must be", lambda d: d["camera"].update(fps="30")),
    ("convert needs 'to'", lambda d: d["convert"].update(to="nosuchformat")),
    ("convert.imgsz must equal imgsz", lambda d: d["convert"].update(imgsz=640)),
]


@pytest.mark.parametrize("message,mutate", BAD_PROFILES, ids=[b[0] for b in BAD_PROFILES])
def test_invalid_profiles_are_rejected(message: str, mutate) -> None:
    data = _valid()
    parse_profile(data, "ok.yaml")  # the unmodified file is valid
    mutate(data)
    with pytest.raises(InputError, match="bad.yaml") as info:
        parse_profile(data, "bad.yaml")
    assert message in str(info.value)


def test_profile_file_errors(tmp_path: Path) -> None:
    bad_yaml = tmp_path / "broken.yaml"
    bad_yaml.write_text("name: [unclosed\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_profile(bad_yaml)
    renamed = tmp_path / "other-name.yaml"
    renamed.write_text(yaml.safe_dump(_valid()))
    with pytest.raises(InputError, match="must equal the file name"):
        load_profile(renamed)
    with pytest.raises(InputError, match="no board profiles"):
        load_profiles(tmp_path / "empty")
    with pytest.raises(InputError, match="unknown board 'pi9'.*raspberry-pi-5"):
        get_profile("pi9")


def test_apply_profile_explicit_wins() -> None:
    prof = get_profile("raspberry-pi-5")
    opts = apply_profile(prof, {"imgsz": None, "threads": None, "backend": "auto", "conf": 0.4})
    assert opts["board"] == "raspberry-pi-5"
    assert opts["imgsz"] == 416 and opts["threads"] == 4 and opts["precision"] == "fp16" and opts["to"] == "ncnn"
    assert opts["conf"] == 0.4 and opts["camera"]["picamera2"] is True
    explicit = apply_profile(prof, {"imgsz": 640, "threads": 2, "backend": "onnxruntime", "precision": "fp32",
                                    "camera": {"width": 320, "height": None},
                                    "backend_options": {"providers": ["CPUExecutionProvider"], "x": 1}})
    assert explicit["imgsz"] == 640 and explicit["threads"] == 2 and explicit["precision"] == "fp32"
    assert explicit["backend"] == "onnxruntime"
    assert explicit["backend_options"] == {"providers": ["CPUExecutionProvider"], "x": 1}
    assert explicit["camera"]["width"] == 320 and explicit["camera"]["height"] == 720
    # the profile itself is never modified
    assert get_profile("raspberry-pi-5").camera["width"] == 1280
    assert apply_profile(None, {"imgsz": None, "threads": 3}) == {"threads": 3}


def test_apply_profile_picks_the_backend_for_the_model(tmp_path: Path) -> None:
    from edgeseg.backend import backend_status

    available = {s.name for s in backend_status() if s.available}
    if "ncnn" not in available:
        pytest.skip("ncnn backend not available")
    param = tmp_path / "m.ncnn.param"
    param.write_text("7767517\n")
    opts = apply_profile(get_profile("raspberry-pi-4"), {"backend": None}, model=param)
    assert opts["backend"] == "ncnn"
    assert opts["backend_options"] == {"use_vulkan_compute": False, "use_fp16": False}
    # Jetson's TensorRT provider options reach onnxruntime for an .onnx model
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    if "onnxruntime" in available:
        jet = apply_profile(get_profile("jetson-orin-nano"), {}, model=onnx)
        assert jet["backend"] == "onnxruntime"
        trt = jet["backend_options"]["providers"][0]
        assert isinstance(trt, tuple) and trt[0] == "TensorrtExecutionProvider" and trt[1]["trt_fp16_enable"] is True
        assert not trt[1]["trt_engine_cache_path"].startswith("~")  # expanded for TensorRT
        assert jet["backend_options"]["providers"][1:] == ["CUDAExecutionProvider", "CPUExecutionProvider"]


CONVERT_CASES = [
    ("coral-usb", "edgeseg convert M.pt --to edgetpu --imgsz 320 --int8 --data CALIB.yaml"),
    ("raspberry-pi-5", "edgeseg convert M.pt --to ncnn --imgsz 416 --half"),
    ("intel-openvino", "edgeseg convert M.pt --to openvino --imgsz 640"),
    ("apple-silicon", "edgeseg convert M.pt --to coreml --imgsz 640 --half"),
]


@pytest.mark.parametrize("board,command", CONVERT_CASES)
def test_convert_command(board: str, command: str) -> None:
    assert convert_command(get_profile(board), "M.pt") == command


def test_cli_list_show_detect(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(main, ["boards"])
    assert res.exit_code == 0, res.output
    for name in EXPECTED_BOARDS:
        assert name in res.output
    res = runner.invoke(main, ["boards", "show", "coral-usb"])
    assert res.exit_code == 0, res.output
    shown = yaml.safe_load(res.output)
    assert shown["detect"]["usb_ids"] == ["1a6e:089a", "18d1:9302"]
    assert shown["backend_options"]["litert"]["delegate"] == "edgetpu"
    res = runner.invoke(main, ["boards", "show", "nope"])
    assert res.exit_code == 1 and "unknown board 'nope'" in res.output and "Traceback" not in res.output
    root = make_tree(tmp_path, model="NVIDIA Jetson Orin Nano Developer Kit", files=("etc/nv_tegra_release",))
    res = runner.invoke(main, ["boards", "--detect", "--root", str(root), "--system", "Linux", "--machine", "aarch64"])
    assert res.exit_code == 0, res.output
    assert "Board: jetson-orin-nano" in res.output and "found /etc/nv_tegra_release" in res.output
    res = runner.invoke(main, ["boards", "--detect", "--json", "--root", str(root), "--system", "Linux",
                               "--machine", "aarch64"])
    data = json.loads(res.output)
    assert data["board"] == "jetson-orin-nano"
    assert data["facts"]["device_tree_model"] == "NVIDIA Jetson Orin Nano Developer Kit"
    res = runner.invoke(main, ["boards", "--detect"])
    assert res.exit_code == 0 and "System:" in res.output


ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
NCNN_PARAM = "7767517\n2 2\nInput in0 0 1 in0 0=8 1=8 2=3\nConvolution conv0 1 1 in0 out0 0=4 1=1 5=1 6=12\n"


def _model_for(backend: str, tmp_path: Path) -> Optional[Path]:
    """A real model file each backend can open (assets, or a tiny hand-written ncnn model)."""
    if backend == "ncnn":
        import struct

        (tmp_path / "m.ncnn.param").write_text(NCNN_PARAM)
        (tmp_path / "m.ncnn.bin").write_bytes(struct.pack("<I", 0) + bytes(4 * 16))
        return tmp_path / "m.ncnn.param"
    path = {"onnxruntime": "yolov8n-seg-320-int8dyn.onnx", "openvino": "yolov8n-seg-320-int8dyn.onnx",
            "litert": "yolov8n-seg-640-int8w.tflite"}.get(backend)
    if path is None:
        return tmp_path / "missing.mlpackage"  # coreml: options are checked before the file is read
    return ASSETS / "models" / path


BACKEND_OPTION_CASES = [(p.name, be) for p in load_profiles().values() for be in p.backend_options]


@pytest.mark.parametrize("board,backend", BACKEND_OPTION_CASES, ids=[f"{b}-{k}" for b, k in BACKEND_OPTION_CASES])
def test_profile_backend_options_are_accepted_by_the_backend(tmp_path: Path, board: str, backend: str) -> None:
    """Every option a profile gives a backend is one that backend takes (no 'unknown options')."""
    from edgeseg.backend import backend_classes, backend_status
    from edgeseg.errors import BackendUnavailableError, ModelLoadError

    if not any(s.name == backend and s.available for s in backend_status()):
        pytest.skip(f"{backend} is not installed here")
    model = _model_for(backend, tmp_path)
    if backend != "coreml" and backend != "ncnn" and not model.is_file():
        pytest.skip(f"asset {model} not found")
    prof = get_profile(board)
    opts = apply_profile(prof, {"backend": backend})
    assert opts["backend"] == backend
    cls = backend_classes()[backend]
    try:
        be = cls(model, threads=opts.get("threads"), **opts["backend_options"])
    except BackendUnavailableError as exc:
        # the Edge TPU delegate (libedgetpu) or a GPU device is not on this machine: the options were taken
        assert "edgetpu" in str(exc).lower() or "delegate" in str(exc).lower(), exc
        return
    except ModelLoadError as exc:
        assert backend == "coreml" and "model not found" in str(exc)
        return
    try:
        assert be.inputs and be.outputs
    finally:
        be.close()


@pytest.mark.parametrize("board, explicit, expected", [
    ("raspberry-pi-5", {}, {"to": "ncnn", "imgsz": 416, "half": True}),
    ("intel-openvino", {}, {"to": "openvino", "imgsz": 640, "half": False}),
    ("jetson-nano", {"imgsz": (320, 320)}, {"to": "onnx", "imgsz": (320, 320), "half": False}),
    ("raspberry-pi-4", {"to": "onnx", "half": True}, {"to": "onnx", "imgsz": 320, "half": True}),
    # the board's int8 follows an explicit --to when that format quantizes too (static int8 ONNX)
    ("coral-usb", {"to": "onnx"}, {"to": "onnx", "imgsz": 320, "half": False, "int8": True}),
    ("apple-silicon", {}, {"to": "coreml", "imgsz": 640, "half": True}),
])
def test_convert_options_from_a_board_explicit_flags_win(board, explicit, expected) -> None:
    from edgeseg.tools.profiles import convert_options

    assert convert_options(get_profile(board), explicit) == expected


def test_convert_for_a_board_whose_format_cannot_be_made_yet_says_so() -> None:
    from edgeseg.tools.profiles import convert_gap, convert_options

    assert convert_gap(get_profile("apple-silicon")) is None  # CoreML fp16 is made now
    assert "convert_note" not in CliRunner().invoke(main, ["boards", "show", "apple-silicon"]).output
    data = _valid()
    data["convert"].update(to="ncnn", precision="int8")  # ncnn has no int8 export
    prof = parse_profile(data, "gap.yaml")
    assert convert_gap(prof)
    with pytest.raises(InputError, match="cannot make"):
        convert_options(prof, {})


def test_cli_convert_with_board(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="torch is not installed (pip install 'edgeseg[convert]')")
    ckpt = Path(__file__).resolve().parents[1].parent / "shared" / "assets" / "models" / "yolov8n-seg-coco.pt"
    if not ckpt.is_file():
        pytest.skip(f"test asset {ckpt} not found")
    out = CliRunner().invoke(main, ["convert", str(ckpt), "--board", "jetson-nano", "--imgsz", "256",
                                    "--out", str(tmp_path / "m.onnx"), "-q"])
    assert out.exit_code == 0, out.output
    assert "board jetson-nano: --to onnx --imgsz 256,256" in out.output
    from edgeseg import Runtime

    with Runtime(tmp_path / "m.onnx") as rt:
        assert rt.imgsz == (256, 256)
    # the Coral boards' format (edgetpu, full int8) is made now; it needs calibration images
    out = CliRunner().invoke(main, ["convert", str(ckpt), "--board", "coral-usb", "--out", str(tmp_path / "x")])
    assert "board coral-usb: --to edgetpu --imgsz 320" in out.output
    assert out.exit_code == 1 and "calibration images" in out.output and not (tmp_path / "x").exists()


@pytest.mark.parametrize("board", ["coral-usb", "coral-dev-board"])
def test_coral_boards_convert_to_the_edgetpu_model(board) -> None:
    from edgeseg.tools.profiles import convert_gap, convert_options

    assert convert_gap(get_profile(board)) is None
    assert convert_options(get_profile(board), {})["to"] == "edgetpu"
