"""ncnn end to end: export the COCO yolov8n-seg checkpoint with pnnx, run it through the Runtime on
bus.jpg, and compare with an ONNX export of the same checkpoint at the same size."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ncnn", reason="ncnn is not installed (pip install 'edgeseg[ncnn]')")
pytest.importorskip("pnnx", reason="pnnx is not installed (pip install 'edgeseg[convert]')")
pytest.importorskip("torch", reason="torch is not installed (pip install 'edgeseg[convert]')")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'edgeseg[onnx]')")

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
CKPT = ASSETS / "models" / "yolov8n-seg-coco.pt"
BUS = ASSETS / "images" / "bus.jpg"
IMGSZ = 320

if not CKPT.is_file() or not BUS.is_file():
    pytest.skip(f"test assets not found under {ASSETS}", allow_module_level=True)


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from click.testing import CliRunner

    from edgeseg.cli import main
    from edgeseg.converters import export

    d = tmp_path_factory.mktemp("ncnn")
    out = CliRunner().invoke(main, ["convert", str(CKPT), "--to", "ncnn", "--imgsz", str(IMGSZ),
                                    "--out", str(d / "y8_ncnn_model")])
    assert out.exit_code == 0, out.output
    return {
        "ncnn": d / "y8_ncnn_model",
        "ncnn_half": export(CKPT, to="ncnn", out=d / "y8h_ncnn_model", imgsz=IMGSZ, half=True, progress=False),
        "onnx": export(str(CKPT), to="onnx", imgsz=IMGSZ, out=str(d / "y8.onnx"), progress=False),
    }


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_export_folder_content(exports: dict) -> None:
    folder = exports["ncnn"]
    assert sorted(p.name for p in folder.iterdir()) == ["metadata.yaml", "y8.ncnn.bin", "y8.ncnn.param"]
    assert oct(folder.stat().st_mode & 0o777) != oct(0o700)  # not left private by the atomic temp folder
    from edgeseg.runtimes.ncnn import NcnnBackend

    be = NcnnBackend(folder)
    assert be.inputs[0].shape == (1, 3, IMGSZ, IMGSZ)
    shapes = sorted(s.shape for s in be.outputs)
    n = (IMGSZ // 8) ** 2 + (IMGSZ // 16) ** 2 + (IMGSZ // 32) ** 2
    assert shapes == sorted([(1, 116, n), (1, 32, IMGSZ // 4, IMGSZ // 4)])
    assert be.metadata["task"] == "segment" and be.metadata["names"][5] == "bus"


@pytest.mark.parametrize("which,box_tol,score_tol,iou_min", [("ncnn", 0.5, 2e-3, 0.98), ("ncnn_half", 2.0, 1e-2, 0.93)])
def test_bus_matches_onnx(exports: dict, which: str, box_tol: float, score_tol: float, iou_min: float) -> None:
    from edgeseg import Runtime

    with Runtime(exports[which]) as rt_ncnn, Runtime(exports["onnx"]) as rt_onnx:
        assert rt_ncnn.backend.name == "ncnn" and rt_onnx.backend.name == "onnxruntime"
        got, ref = rt_ncnn(str(BUS)), rt_onnx(str(BUS))
    assert len(ref) >= 4 and 5 in ref.class_ids.tolist() and 0 in ref.class_ids.tolist()  # a bus and people
    assert len(got) == len(ref)
    np.testing.assert_array_equal(got.class_ids, ref.class_ids)
    np.testing.assert_allclose(got.scores, ref.scores, atol=score_tol)
    np.testing.assert_allclose(got.boxes, ref.boxes, atol=box_tol)
    dg, dr = got.masks.dense(), ref.masks.dense()
    for i in range(len(ref)):
        assert _mask_iou(dg[i], dr[i]) >= iou_min


def test_refuses_a_foreign_folder(tmp_path: Path) -> None:
    from edgeseg.converters import export
    from edgeseg.errors import ConversionError

    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ConversionError, match="not an ncnn export"):
        export(CKPT, to="ncnn", out=tmp_path, imgsz=IMGSZ, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_ncnn_refuses_dynamic_and_onnx_options() -> None:
    from edgeseg.converters import export
    from edgeseg.errors import InputError

    with pytest.raises(InputError, match=r"dynamic applies to ONNX, OpenVINO, TorchScript exports only, .*to='ncnn'"):
        export(CKPT, to="ncnn", dynamic=True)
    with pytest.raises(InputError, match="opset applies to ONNX exports only"):
        export(CKPT, to="ncnn", opset=17)
