"""ncnn backend on a hand-written ncnn model (real ncnn library), and its error paths."""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Callable, Tuple

import numpy as np
import pytest

pytest.importorskip("ncnn", reason="ncnn is not installed (pip install 'edgeseg[ncnn]')")

from edgeseg.backend import select_backend  # noqa: E402
from edgeseg.errors import InputError, ModelLoadError  # noqa: E402
from edgeseg.runtimes.ncnn import NcnnBackend, parse_param  # noqa: E402

# 1x1 convolution 3 -> 4 channels on an 8x8 input; one output is the conv map, one its (4, 64) reshape
PARAM = """7767517
4 5
Input            in0      0 1 in0 0=8 1=8 2=3
Convolution      conv0    1 1 in0 c0 0=4 1=1 5=1 6=12
Split            split0   1 2 c0 out1 c1
Reshape          flat     1 1 c1 out0 0=64 1=4
"""
PARAM_NO_SHAPE = PARAM.replace(" 0=8 1=8 2=3", "")

RNG = np.random.default_rng(0)
WEIGHT = RNG.standard_normal((4, 3)).astype(np.float32)
BIAS = RNG.standard_normal(4).astype(np.float32)


def write_model(folder: Path, param: str = PARAM, stem: str = "model.ncnn", metadata: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.param").write_text(param)
    # ncnn weight blob: a 4-byte tag (0 = raw float32) before the weights; the bias has no tag
    (folder / f"{stem}.bin").write_bytes(struct.pack("<I", 0) + WEIGHT.tobytes() + BIAS.tobytes())
    if metadata:
        (folder / "metadata.yaml").write_text(metadata)
    return folder / f"{stem}.param"


def reference(x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    conv = np.einsum("oc,bchw->bohw", WEIGHT, x) + BIAS[None, :, None, None]
    return conv.reshape(x.shape[0], 4, 64), conv


def test_parse_param(tmp_path: Path) -> None:
    inputs, outputs = parse_param(write_model(tmp_path))
    assert inputs == [("in0", (3, 8, 8))]
    assert sorted(outputs) == ["out0", "out1"]


@pytest.mark.parametrize("how", ["param", "folder"])
def test_run_matches_numpy(tmp_path: Path, how: str) -> None:
    param = write_model(tmp_path / "m_ncnn_model", metadata="imgsz: [8, 8]\nstride: 32\nnames: {0: a}\n")
    path = param if how == "param" else param.parent
    assert select_backend(path) is NcnnBackend
    be = NcnnBackend(path, threads=1)
    assert [(s.name, s.shape) for s in be.inputs] == [("in0", (1, 3, 8, 8))]
    assert {s.name: s.shape for s in be.outputs} == {"out0": (1, 4, 64), "out1": (1, 4, 8, 8)}
    assert be.metadata["stride"] == 32 and be.metadata["names"] == {0: "a"}
    x = RNG.random((1, 3, 8, 8), dtype=np.float32)
    out = be.run({"in0": x})
    ref0, ref1 = reference(x)
    assert out["out0"].shape == (1, 4, 64) and out["out0"].dtype == np.float32
    np.testing.assert_allclose(out["out0"], ref0, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["out1"], ref1, rtol=1e-5, atol=1e-5)
    assert be.describe()["threads"] == 1
    be.close()
    be.close()  # idempotent
    with pytest.raises(InputError, match="closed"):
        be.run({"in0": x})


def test_batch_and_non_contiguous_input(tmp_path: Path) -> None:
    be = NcnnBackend(write_model(tmp_path), use_fp16=False, use_vulkan_compute=False)
    x = RNG.random((2, 8, 8, 3), dtype=np.float32).transpose(0, 3, 1, 2)  # a strided NCHW view
    out = be.run({"in0": x})
    ref0, ref1 = reference(x)
    assert out["out0"].shape == (2, 4, 64)
    np.testing.assert_allclose(out["out1"], ref1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["out0"], ref0, rtol=1e-5, atol=1e-5)


def test_input_size_from_metadata_when_param_has_none(tmp_path: Path) -> None:
    be = NcnnBackend(write_model(tmp_path / "a", PARAM_NO_SHAPE, metadata="imgsz: [8, 8]\n"))
    assert be.inputs[0].shape == (1, 3, 8, 8) and {s.name: s.shape for s in be.outputs}["out0"] == (1, 4, 64)
    be = NcnnBackend(write_model(tmp_path / "b", PARAM_NO_SHAPE))
    assert be.inputs[0].shape == (1, 3, None, None)
    out = be.run({"in0": np.zeros((1, 3, 8, 8), np.float32)})  # still runs
    np.testing.assert_allclose(out["out1"][0, :, 0, 0], BIAS, rtol=1e-6)


def _corrupt_magic(d: Path) -> Path:
    p = write_model(d)
    p.write_text(PARAM.replace("7767517", "1234567"))
    return p


def _truncated_bin(d: Path) -> Path:
    p = write_model(d)
    p.with_suffix(".bin").write_bytes(b"\0" * 10)
    return p


def _missing_bin(d: Path) -> Path:
    p = write_model(d)
    p.with_suffix(".bin").unlink()
    return p


def _two_params(d: Path) -> Path:
    write_model(d, stem="a")
    write_model(d, stem="b")
    return d


def _binary_param(d: Path) -> Path:
    p = write_model(d)
    p.write_bytes(b"\xff\xfe\x00\x01" * 8)
    return p


def _empty_param(d: Path) -> Path:
    p = write_model(d)
    p.write_text("")
    return p


def _malformed_layer(d: Path) -> Path:
    p = write_model(d)
    p.write_text(PARAM.replace("Split            split0   1 2 c0 out1 c1", "Split split0 one"))
    return p


def _unknown_layer(d: Path) -> Path:
    p = write_model(d)
    p.write_text(PARAM.replace("Reshape ", "NoSuchLayer "))
    return p


BAD_MODELS = [
    ("not an ncnn .param file", _corrupt_magic),
    ("truncated", _truncated_bin),
    ("model not found", _missing_bin),
    ("expected one ncnn .param file", _two_params),
    ("expected a text ncnn .param", _binary_param),
    ("file is empty", _empty_param),
    ("malformed layer line", _malformed_layer),
    ("could not parse the .param", _unknown_layer),
]


@pytest.mark.parametrize("message,make", BAD_MODELS, ids=[b[0] for b in BAD_MODELS])
def test_corrupt_models_raise_model_load_error(tmp_path: Path, message: str, make: Callable[[Path], Path]) -> None:
    with pytest.raises(ModelLoadError, match=message):
        NcnnBackend(make(tmp_path / "m"))


def test_bad_options_and_inputs(tmp_path: Path) -> None:
    param = write_model(tmp_path)
    with pytest.raises(InputError, match="unknown options.*use_fp16"):
        NcnnBackend(param, use_tensorrt=True)
    with pytest.raises(InputError, match="threads must be a positive integer"):
        NcnnBackend(param, threads=0)
    be = NcnnBackend(param)
    with pytest.raises(InputError, match="missing inputs"):
        be.run({"images": np.zeros((1, 3, 8, 8), np.float32)})
    with pytest.raises(InputError, match=r"expected a \(B, C, H, W\) array"):
        be.run({"in0": np.zeros((3, 8, 8), np.float32)})


# one-token .param edits that make ncnn misbehave (found by the fuzz test)
CRASHING = "7767517\n2 2\nInput in0 0 1 in0 0=8 1=8 2=3\nPooling pool 1 1 in0 out0 0=1 1=2 2=1 3=-5\n"  # free() aborts
NEGATIVE = PARAM.replace("Reshape          flat     1 1 c1 out0 0=64 1=4",
                         "Pooling          flat     1 1 c1 out0 0=0 1=2 2=1 3=-100")  # a -193x-193 Mat
EMPTY = PARAM.replace("Reshape          flat     1 1 c1 out0 0=64 1=4",
                      "Crop             flat     1 1 c1 out0 0=-5 1=-5 3=20 4=20")  # extract() -> empty Mat


@pytest.mark.parametrize("param,message", [
    (CRASHING, r"ncnn crashed \(SIG[A-Z]+\) in a trial inference"),
    (NEGATIVE, r"output 'out0' has an impossible shape \(4, -193, -193\)|ncnn crashed \(SIGSEGV\)"),  # either, by heap luck
    (EMPTY, r"output 'out0' could not be extracted"),
], ids=["crash", "negative-shape", "empty"])
def test_malformed_graphs_fail_at_load_in_a_child_process(tmp_path: Path, param: str, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        NcnnBackend(write_model(tmp_path, param))


def test_empty_output_at_run_time_is_an_inference_error(tmp_path: Path) -> None:
    from edgeseg.errors import InferenceError

    # no input size in the .param and no metadata: no trial at load; run must not segfault on the empty Mat
    be = NcnnBackend(write_model(tmp_path, EMPTY.replace(" 0=8 1=8 2=3", "")))
    with pytest.raises(InferenceError, match="out0' could not be extracted"):
        be.run({"in0": np.zeros((1, 3, 8, 8), np.float32)})
