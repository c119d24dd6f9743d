"""``convert --to coreml``: ML packages (fp32, fp16, 8-bit weights) that coremltools opens here, with
the metadata every export carries, that ``edgeseg info`` describes; prediction only on macOS.

The COCO conversions (about 40 s for all three at 320) are made once per module and shared; a tiny
freshly built model covers the path without ../shared.
"""
from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Dict

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the converters need torch: pip install 'edgeseg[convert]'")
ct = pytest.importorskip("coremltools", reason="CoreML export needs coremltools: pip install 'edgeseg[coreml]'")

from click.testing import CliRunner  # noqa: E402

from _assets import IMAGES, MODELS, ROOT  # noqa: E402
from edgeseg import Runtime  # noqa: E402
from edgeseg.cli import main  # noqa: E402
from edgeseg.converters import export  # noqa: E402
from edgeseg.converters.export import export_metadata  # noqa: E402
from edgeseg.errors import BackendUnavailableError, ConversionError, InputError  # noqa: E402
from edgeseg.io import path_size  # noqa: E402
from edgeseg.metadata import parse_metadata  # noqa: E402

COCO_PT = MODELS / "yolov8n-seg-coco.pt"
IMGSZ = 320
ON_MAC = platform.system() == "Darwin"
NAMES = {0: "cat", 1: "dog", 2: "heron"}


def _spec(path: Path):
    model = ct.models.MLModel(str(path), skip_model_load=True)  # opens without CoreML (Linux)
    return model, model.get_spec()


def _op_types(spec) -> Dict[str, int]:
    """Operation type -> count over the ML program's main function."""
    counts: Dict[str, int] = {}
    main_fn = spec.mlProgram.functions["main"]
    for block in main_fn.block_specializations.values():
        for op in block.operations:
            counts[op.type] = counts.get(op.type, 0) + 1
    return counts


def _meta(spec) -> dict:
    return dict(spec.description.metadata.userDefined)


@pytest.fixture(scope="module")
def coco(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """fp32 and int8 through export(), fp16 through the CLI: one conversion each for the module."""
    if not COCO_PT.is_file():
        pytest.skip(f"test asset {COCO_PT} not found (tests expect ../shared/assets beside the repo)")
    d = tmp_path_factory.mktemp("coreml-coco")
    out = {"fp32": export(COCO_PT, to="coreml", imgsz=IMGSZ, out=d / "fp32.mlpackage", progress=False),
           "int8": export(COCO_PT, to="coreml", imgsz=IMGSZ, int8=True, out=d / "int8.mlpackage", progress=False)}
    res = CliRunner().invoke(main, ["convert", str(COCO_PT), "--to", "coreml", "--half", "--imgsz", str(IMGSZ),
                                    "--out", str(d), "-q"])
    assert res.exit_code == 0, res.output
    out["fp16"] = d / "yolov8n-seg-coco.mlpackage"  # --out DIR: the package goes inside, named after the .pt
    assert f"-> {out['fp16']} (coreml" in res.output
    return out


@pytest.mark.parametrize("precision, op", [("fp32", None), ("fp16", None), ("int8", "constexpr_affine_dequantize")])
def test_packages_open_with_names_layout_and_every_metadata_key(coco: Dict[str, Path], precision: str, op) -> None:
    from edgeseg.converters.checkpoint import load_model, sha256_file

    model, spec = _spec(coco[precision])
    assert spec.WhichOneof("Type") == "mlProgram"
    assert [f.name for f in spec.description.input] == ["images"]
    assert [f.name for f in spec.description.output] == ["output0", "output1"]
    assert list(spec.description.input[0].type.multiArrayType.shape) == [1, 3, IMGSZ, IMGSZ]
    raw = _meta(spec)
    expected_keys = set(export_metadata(load_model(COCO_PT), (IMGSZ, IMGSZ), half=precision == "fp16",
                                        dynamic=False, fmt="coreml", int8=precision == "int8"))
    assert expected_keys <= set(raw), expected_keys - set(raw)
    meta = parse_metadata(raw, "coreml")
    assert meta.names[0] == "person" and len(meta.names) == 80
    assert meta.imgsz == (IMGSZ, IMGSZ) and meta.stride == 32 and meta.task == "segment"
    assert meta.output_layout == "raw" and meta.boxes_normalized is False
    assert meta.quantization == precision
    assert meta.raw["source_sha256"] == sha256_file(COCO_PT)
    assert model.short_description.startswith("edgeseg export of") and model.author == "edgeseg"
    ops = _op_types(spec)
    assert "conv" in ops
    if op:
        assert ops.get(op, 0) >= 60, ops  # the conv weights are int8 with per-channel scales
        assert raw["int8"].startswith("{'weights': 'int8 linear symmetric")
    else:
        assert "constexpr_affine_dequantize" not in ops


def test_fp16_and_int8_are_smaller(coco: Dict[str, Path]) -> None:
    sizes = {k: path_size(p) for k, p in coco.items()}
    assert sizes["fp16"] < 0.6 * sizes["fp32"], sizes
    assert sizes["int8"] < 0.35 * sizes["fp32"], sizes


@pytest.mark.parametrize("precision, weights", [("fp32", "fp32"), ("fp16", "fp16"), ("int8", "int8")])
def test_info_describes_the_package(coco: Dict[str, Path], precision: str, weights: str) -> None:
    res = CliRunner().invoke(main, ["info", "-m", str(coco[precision]), "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output[res.output.index("{"):])
    assert d["format"] == "coreml" and d["backend"] == "coreml" and d["task"] == "segment"
    assert d["input"]["name"] == "images" and d["input"]["shape"] == [1, 3, IMGSZ, IMGSZ]
    assert d["input"]["dtype"] == "float32"
    assert {o["name"]: o["shape"] for o in d["outputs"]} == {"output0": [1, 116, 2100], "output1": [1, 32, 80, 80]}
    layout = d["output_layout"]
    assert (layout["kind"], layout["num_classes"], layout["mask_dim"], layout["boxes"]) == ("raw", 80, 32, "pixels")
    assert layout["predictions"]["name"] == "output0" and layout["protos"]["name"] == "output1"
    assert d["quantization"]["weights"] == weights and d["names"]["0"] == "person"
    assert d["backend_details"]["model_type"] == "mlProgram"


@pytest.mark.skipif(ON_MAC, reason="off-macOS behaviour")
def test_predict_off_macos_says_why(coco: Dict[str, Path]) -> None:
    with Runtime(coco["fp16"]) as rt:
        with pytest.raises(BackendUnavailableError, match="CoreML can only run models on macOS"):
            rt.predict(np.full((IMGSZ, IMGSZ, 3), 114, np.uint8))


@pytest.mark.skipif(not ON_MAC, reason="CoreML predicts only on macOS")
def test_predict_on_macos_finds_the_bus(coco: Dict[str, Path]) -> None:  # pragma: no cover - not run on Linux
    import cv2

    img = cv2.imread(str(IMAGES / "bus.jpg"))
    for precision in ("fp32", "fp16", "int8"):
        with Runtime(coco[precision]) as rt:
            labels = {rt.names[int(c)] for c in rt.predict(img).class_ids}
        assert {"bus", "person"} <= labels, (precision, labels)


# ------------------------------------------------------------------------------- without ../shared


@pytest.fixture(scope="module")
def tiny_pt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An edgeseg checkpoint of a freshly built yolov8-seg at 1/16 width (3 classes)."""
    from edgeseg.converters.arch import architecture
    from edgeseg.converters.checkpoint import LoadedModel, save_checkpoint
    from edgeseg.converters.model import SegmentationModel

    arch = architecture("yolov8-seg", "n", len(NAMES))
    arch["scales"]["n"] = [0.33, 0.0625, 1024]
    torch.manual_seed(0)
    net = SegmentationModel(arch, NAMES).float().eval()
    d = tmp_path_factory.mktemp("coreml-tiny")
    return save_checkpoint(LoadedModel(net, dict(NAMES), (64, 64), d / "tiny.pt", "", "edgeseg"), d / "tiny.safetensors")


@pytest.fixture(scope="module")
def tiny_package(tiny_pt: Path) -> Path:
    """The tiny model through ``edgeseg convert --int8`` (shared by the tests below)."""
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY

    table = _TORCH_OPS_REGISTRY.name_to_func_mapping
    before = {n: table[n] for n in ("int", "bool")}
    out = tiny_pt.parent / "t.mlpackage"
    res = CliRunner().invoke(main, ["convert", str(tiny_pt), "--to", "coreml", "--int8", "--imgsz", "64",
                                    "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    # the numpy>=2.4 workaround for coremltools' int() casts is scoped to the conversion
    assert {n: table[n] for n in ("int", "bool")} == before
    return out


def test_tiny_model_converts_and_describes_itself(tiny_package: Path) -> None:
    _, spec = _spec(tiny_package)
    meta = parse_metadata(_meta(spec), "coreml")
    assert meta.names == NAMES and meta.imgsz == (64, 64) and meta.output_layout == "raw"
    assert meta.quantization == "int8" and "constexpr_affine_dequantize" in _op_types(spec)
    with Runtime(tiny_package) as rt:
        assert rt.names == NAMES and rt.layout.kind == "raw" and rt.layout.nc == 3
        assert {s.name: s.shape for s in rt.backend.outputs} == {"output0": (1, 4 + 3 + 32, 84),
                                                                  "output1": (1, 32, 16, 16)}
        assert rt.info["quantization"]["weights"] == "int8"


def test_existing_package_is_replaced_only_by_a_finished_conversion(tiny_pt: Path, tiny_package: Path,
                                                                     tmp_path: Path) -> None:
    import shutil

    target = tmp_path / "m.mlpackage"
    shutil.copytree(tiny_package, target)
    before = _meta(_spec(target)[1])["date"], sorted(p.name for p in target.iterdir())
    with pytest.raises(InputError, match="choose one of half"):  # refused before any work
        export(tiny_pt, to="coreml", imgsz=64, half=True, int8=True, out=target, progress=False)
    with pytest.raises(InputError, match=r"data applies to .*exports only, got data=.* with to=.coreml."):
        export(tiny_pt, to="coreml", imgsz=64, int8=True, data=str(tmp_path), out=target, progress=False)
    assert (_meta(_spec(target)[1])["date"], sorted(p.name for p in target.iterdir())) == before
    assert export(tiny_pt, to="coreml", imgsz=64, out=target, progress=False) == target
    assert parse_metadata(_meta(_spec(target)[1])).quantization == "fp32"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mlpackage"]  # no temp folders left
    foreign = tmp_path / "photos.mlpackage"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"x")
    with pytest.raises(ConversionError, match="holds files that are not an CoreML export"):
        export(tiny_pt, to="coreml", imgsz=64, out=foreign, progress=False)
    assert [p.name for p in foreign.iterdir()] == ["cat.jpg"]


def test_without_coremltools_convert_names_the_extra(tiny_pt: Path, tmp_path: Path) -> None:
    target = tmp_path / "keep.mlpackage"
    target.mkdir()
    (target / "Manifest.json").write_text("{}")
    code = ("import sys\n"
            "sys.modules['coremltools'] = None\n"  # import fails, find_spec says not installed
            "from edgeseg.cli import main\n"
            f"main(['convert', {str(tiny_pt)!r}, '--to', 'coreml', '--out', {str(target)!r}, '-q'])\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), timeout=300)
    assert res.returncode != 0
    assert "CoreML export needs the Python package 'coremltools'" in res.stderr
    assert "pip install 'edgeseg[coreml]'" in res.stderr and "Traceback" not in res.stderr
    assert [p.name for p in target.iterdir()] == ["Manifest.json"] and (target / "Manifest.json").read_text() == "{}"


def test_int_of_a_shape_product_converts() -> None:
    """The head's ``torch.full((h * w, 1), s)`` traces to ``aten::Int`` of a folded one-element
    tensor, which coremltools 9.0 turns into ``int(array)``: a TypeError with numpy >= 2.4."""
    from edgeseg.converters.export.coreml import _scalar_casts

    class Rows(torch.nn.Module):
        def forward(self, x):
            h, w = x.shape[2], x.shape[3]
            return torch.full((h * w, 1), 8.0) * x.mean()

    traced = torch.jit.trace(Rows(), torch.zeros(1, 3, 4, 5))

    def convert():
        return ct.convert(traced, inputs=[ct.TensorType(name="x", shape=(1, 3, 4, 5))], convert_to="mlprogram",
                          minimum_deployment_target=ct.target.iOS16, skip_model_load=True)

    numpy_major_minor = tuple(int(v) for v in np.__version__.split(".")[:2])
    if numpy_major_minor >= (2, 4) and ct.__version__ == "9.0":
        with pytest.raises(TypeError, match="only 0-dimensional arrays"):
            convert()  # the vendor bug this exporter works around
    with _scalar_casts():
        model = convert()
    (out,) = model.get_spec().description.output
    assert list(out.type.multiArrayType.shape) == [20, 1]
