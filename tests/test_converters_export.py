"""Export to ONNX / OpenVINO / TorchScript at 640 and 320: the artifacts load in Runtime with the
right names and layout, carry their metadata, and agree with the .pt (edgeseg verify).
Each artifact is converted once per session."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the converters need torch: pip install 'edgeseg[convert]'")
pytest.importorskip("onnx", reason="ONNX export needs onnx: pip install 'edgeseg[convert]'")
pytest.importorskip("openvino", reason="OpenVINO export needs openvino: pip install 'edgeseg[convert]'")
pytest.importorskip("onnxruntime", reason="running ONNX needs onnxruntime: pip install 'edgeseg[onnx]'")

from click.testing import CliRunner  # noqa: E402

from edgeseg import Runtime  # noqa: E402
from edgeseg.cli import main  # noqa: E402
from edgeseg.converters.export.registry import exporters  # noqa: E402
from edgeseg.errors import ConversionError, InputError  # noqa: E402

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
COCO_PT = ASSETS / "models" / "yolov8n-seg-coco.pt"
IMAGES = [ASSETS / "images" / "bus.jpg", ASSETS / "images" / "zidane.jpg"]
VAL_DIR = ASSETS / "datasets" / "coco8-seg" / "images" / "val"

FORMATS = ["onnx", "openvino", "torchscript"]
SIZES = [640, 320]
SUFFIX = {name: exp.suffix for name, exp in exporters().items()}  # from the exporter registry
BACKEND = {name: exp.backend for name, exp in exporters().items()}


@pytest.fixture(scope="session")
def coco_pt() -> Path:
    if not COCO_PT.is_file() or not VAL_DIR.is_dir():
        pytest.skip(f"test assets not found under {ASSETS}; see ../shared/assets/README.md")
    return COCO_PT


@pytest.fixture(scope="session")
def exports(coco_pt, tmp_path_factory):
    """(format, imgsz) -> artifact path, each made by `edgeseg convert` once, lazily."""
    root = tmp_path_factory.mktemp("exports")
    made = {}

    def get(fmt: str, imgsz: int) -> Path:
        if (fmt, imgsz) not in made:
            out = root / f"n{imgsz}{SUFFIX[fmt]}"
            r = CliRunner().invoke(main, ["convert", str(coco_pt), "--to", fmt, "--imgsz", str(imgsz), "--out", str(out), "-q"])
            assert r.exit_code == 0, r.output
            assert str(out) in r.output
            made[(fmt, imgsz)] = out
        return made[(fmt, imgsz)]

    return get


@pytest.mark.parametrize("imgsz", SIZES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_export_loads_in_runtime_and_verifies(exports, coco_pt, fmt, imgsz):
    art = exports(fmt, imgsz)
    with Runtime(art) as rt:
        assert rt.backend.name == BACKEND[fmt]
        assert rt.imgsz == (imgsz, imgsz)
        assert len(rt.names) == 80 and rt.names[0] == "person" and rt.names[79] == "toothbrush"
        assert rt.meta.output_layout == "raw" and rt.meta.quantization == "fp32" and rt.meta.task == "segment"
        assert rt.meta.raw["source_sha256"] == load_sha(coco_pt)
        assert rt.layout.kind == "raw" and rt.layout.nc == 80 and rt.layout.nm == 32
        assert [s.name for s in rt.backend.outputs] == ["output0", "output1"]
    # the check: edgeseg verify against the .pt, mask IoU >= 0.99 on bus, zidane, coco8-seg val
    args = ["verify", str(coco_pt), str(art), "--json"] + [a for p in IMAGES + [VAL_DIR] for a in ("--images", str(p))]
    r = CliRunner().invoke(main, args)
    report = json.loads(r.output)
    assert r.exit_code == 0, r.output
    assert report["passed"] and report["precision"] == "fp32"
    assert len(report["images"]) == 6
    for im in report["images"]:
        assert im["matched"] >= 1 and im["min_mask_iou"] >= 0.99, im
        assert im["max_box_error"] <= 1.0 and im["max_score_error"] <= 0.005, im


_SHA = {}


def load_sha(p: Path) -> str:
    if p not in _SHA:
        import hashlib

        _SHA[p] = hashlib.sha256(p.read_bytes()).hexdigest()
    return _SHA[p]


def test_exported_onnx_finds_the_bus_and_the_people(exports):
    with Runtime(exports("onnx", 640)) as rt:
        res = rt(str(ASSETS / "images" / "bus.jpg"))
    names = res.class_names
    assert names.count("bus") == 1 and names.count("person") >= 3
    bus = res.boxes[names.index("bus")]
    assert bus[2] - bus[0] > 600  # the bus spans most of the 810 px wide photo
    assert res.masks is not None and (res.masks.areas() > 1000).all()


def test_metadata_in_each_format(exports, coco_pt):
    """The Ultralytics places: ONNX metadata_props (str literals), metadata.yaml, config.txt."""
    import ast

    import onnx
    import torch
    import yaml

    props = {p.key: p.value for p in onnx.load(str(exports("onnx", 320))).metadata_props}
    assert ast.literal_eval(props["names"])[5] == "bus"
    assert ast.literal_eval(props["imgsz"]) == [320, 320]
    assert props["stride"] == "32" and props["task"] == "segment" and props["batch"] == "1"
    for key in ("edgeseg_version", "output_layout", "quantization", "source_sha256", "date", "description"):
        assert props[key]

    folder = exports("openvino", 320)
    assert sorted(p.name for p in folder.iterdir()) == ["metadata.yaml", "n320.bin", "n320.xml"]
    meta = yaml.safe_load((folder / "metadata.yaml").read_text())
    assert meta["names"][0] == "person" and meta["imgsz"] == [320, 320] and meta["source_sha256"] == load_sha(coco_pt)

    extra = {"config.txt": ""}
    torch.jit.load(str(exports("torchscript", 320)), _extra_files=extra)
    cfg = json.loads(extra["config.txt"])
    assert cfg["names"]["0"] == "person" and cfg["imgsz"] == [320, 320] and cfg["output_layout"] == "raw"


@pytest.mark.parametrize(
    "kwargs,backend",
    [
        ({"to": "onnx", "imgsz": (160, 224), "dynamic": True, "simplify": True}, "onnxruntime"),
        ({"to": "onnx", "imgsz": 160, "opset": 18}, "onnxruntime"),
        ({"to": "onnx", "imgsz": 160, "half": True}, "onnxruntime"),
        ({"to": "openvino", "imgsz": 160, "half": True}, "openvino"),
    ],
)
def test_export_options(coco_pt, tmp_path, kwargs, backend):
    from edgeseg.converters import export

    out = export(coco_pt, out=tmp_path / ("m_openvino_model" if kwargs["to"] == "openvino" else "m.onnx"), progress=False, **kwargs)
    with Runtime(out, backend=backend) as rt:
        res = rt(str(ASSETS / "images" / "bus.jpg"))
        assert "bus" in res.class_names
        if kwargs.get("dynamic"):
            assert rt.input_spec.shape[2] is None and rt.meta.raw["dynamic"] is True
        assert rt.meta.quantization == ("fp16" if kwargs.get("half") else "fp32")
    if kwargs.get("half"):
        from edgeseg.eval.verify import verify

        rep = verify(coco_pt, out, [ASSETS / "images" / "bus.jpg"])
        assert rep.precision == "fp16" and rep.passed, rep.table()


def test_failed_export_leaves_nothing_and_names_the_stage(coco_pt, tmp_path, monkeypatch):
    """Fault injection in the last ONNX stage and in the OpenVINO metadata stage."""
    import onnx
    import yaml

    from edgeseg.converters import export

    def broken(*a, **k):
        raise ValueError("injected failure")

    monkeypatch.setattr(onnx.checker, "check_model", broken)
    with pytest.raises(ConversionError, match=r"onnx export failed at stage 'onnx.checker': ValueError: injected failure"):
        export(coco_pt, to="onnx", imgsz=64, out=tmp_path / "x.onnx", progress=False)
    monkeypatch.setattr(yaml, "safe_dump", broken)
    with pytest.raises(ConversionError, match=r"openvino export failed at stage 'metadata'"):
        export(coco_pt, to="openvino", imgsz=64, out=tmp_path / "x_openvino_model", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_export_input_errors(coco_pt, tmp_path):
    from edgeseg.converters import export

    with pytest.raises(InputError, match="unknown export format 'no-such-format'; expected one of onnx, "):
        export(coco_pt, to="no-such-format")
    with pytest.raises(InputError, match="opset applies to ONNX exports only"):
        export(coco_pt, to="openvino", opset=17)
    with pytest.raises(InputError, match="out is the output folder"):
        export(coco_pt, to="openvino", out=tmp_path / "m.xml")
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(ConversionError, match="not an OpenVINO export"):
        export(coco_pt, to="openvino", imgsz=64, out=tmp_path / "precious", progress=False)
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"


def test_cli_convert_errors_are_clean(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    r = CliRunner().invoke(main, ["convert", str(bad), "--to", "onnx"])
    assert r.exit_code == 1
    assert "not a PyTorch checkpoint" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "bad.onnx").exists()
    r = CliRunner().invoke(main, ["convert", str(bad), "--imgsz", "abc"])
    assert r.exit_code == 2 and "640 or 320,480" in r.output


def test_pt_through_runtime_matches_ultralytics_references(coco_pt):
    """The .pt via the torch backend against Ultralytics 8.4.190's predictions (rectangular
    letterbox, conf 0.25, iou 0.7): same classes, scores within 0.01, boxes within 2 px, mask IoU >= 0.95."""
    from edgeseg.masks import rle_decode

    refs = sorted((ASSETS / "reference").glob("yolov8n-seg-coco__*.json"))
    assert len(refs) == 6
    with Runtime(coco_pt, conf=0.25, iou=0.7) as rt:
        assert rt.backend.name == "torch" and rt.input_spec.shape[2] is None  # dynamic: rectangular letterbox
        for ref_path in refs:
            ref = json.loads(ref_path.read_text())
            stem = ref_path.stem.split("__")[1]
            img = ASSETS / "images" / f"{stem}.jpg"
            if not img.is_file():
                img = VAL_DIR / f"{stem}.jpg"
            res = rt(str(img))
            dets = sorted(ref["detections"], key=lambda d: -d["score"])
            assert len(res) == len(dets), ref_path.name
            order = np.argsort(-res.scores, kind="stable")
            for d, k in zip(dets, order):
                assert res.class_ids[k] == d["class_id"], ref_path.name
                assert abs(res.scores[k] - d["score"]) <= 0.01
                assert np.abs(res.boxes[k] - np.array(d["xyxy"])).max() <= 2.0
                m_ref = rle_decode(d["mask_rle"])
                m = res.masks.mask(int(k))
                assert (m & m_ref).sum() / max((m | m_ref).sum(), 1) >= 0.95


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_yolo11_export_raw_outputs_match_torch(tmp_path, fmt):
    """YOLO11 (C3k2, C2PSA attention, depth-wise head) survives export: raw outputs equal torch's."""
    import torch

    from edgeseg.backend import select_backend
    from edgeseg.converters import export, load_model

    pt = ASSETS / "models" / "yolo11n-seg-random.pt"
    if not pt.is_file():
        pytest.skip(f"test asset {pt} not found")
    out = export(pt, to=fmt, imgsz=(128, 192), out=tmp_path / ("y11_openvino_model" if fmt == "openvino" else "y11.onnx"),
                 progress=False)
    x = np.random.default_rng(0).random((1, 3, 128, 192), dtype=np.float32)
    with torch.no_grad():
        ref0, ref1 = (t.numpy() for t in load_model(pt).model(torch.from_numpy(x)))
    be = select_backend(out, BACKEND[fmt])(out)
    got = be.run({"images": x})
    assert np.abs(got["output0"][:, :4] - ref0[:, :4]).max() < 2e-3
    assert np.abs(got["output0"][:, 4:] - ref0[:, 4:]).max() < 1e-4
    assert np.abs(got["output1"] - ref1).max() < 1e-4
