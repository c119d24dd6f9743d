"""Zero-copy inference on LiteRT: ``Runtime(image)`` writes the letterbox straight into the
interpreter's input tensor and decodes the outputs where the interpreter left them. It must give
exactly what the copying path (preprocess -> infer -> postprocess) gives, keep nothing that points
into the interpreter's memory (LiteRT refuses ``invoke`` while such a view lives), and survive a
failure half-way. The embedded default model runs without ../shared; the shared int8 models too
when they are there."""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np
import pytest

from _assets import MODELS, image_path, require_assets
from edgeseg import Runtime
from edgeseg import default_model as dm
from edgeseg.backend import TensorSpec
from edgeseg.errors import InferenceError, InputError
from edgeseg.eval.datasets.synth import synth_image
from edgeseg.io import read_image
from edgeseg.preprocess import Preprocessor
from edgeseg.results import Results

pytest.importorskip("ai_edge_litert", reason="needs the tflite extra")

DEFAULT_TFLITE = dm.ASSETS / dm.FILES[1]


def _copying(rt: Runtime, img: np.ndarray) -> Results:
    feeds, lb = rt.preprocess(img)
    return rt.postprocess(rt.infer(feeds), lb, img)


def _same(a: Results, b: Results) -> None:
    assert len(a) == len(b)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.class_ids, b.class_ids)
    for k in range(len(a)):
        np.testing.assert_array_equal(a.masks.mask(k), b.masks.mask(k))


def _cases():
    yield pytest.param(DEFAULT_TFLITE, None, id="default-320-int8")
    for name in ("yolov8n-seg-640-int8w.tflite", "yolov8n-seg-640-fullint8.tflite"):
        yield pytest.param(MODELS / name, "bus", id=name)


@pytest.mark.parametrize("model, image", list(_cases()))
def test_in_place_equals_the_copying_path(model: Path, image: str) -> None:
    require_assets(model)
    if image is None:
        img = synth_image(3, (360, 480), seed=5)[0]
    else:
        require_assets(image_path(image))
        img = read_image(image_path(image))
    with Runtime(model, conf=0.1) as rt:
        assert rt.backend.in_place
        first = rt(img)
        assert len(first) > 0, "the test needs detections to compare"
        kept = (first.boxes.copy(), first.masks.mask(0).copy())
        for _ in range(3):  # invoke again: no view of the interpreter's memory was kept
            again = rt(img)
            _same(again, first)
        _same(_copying(rt, img), first)
        # the next inferences did not change what an earlier result holds
        np.testing.assert_array_equal(first.boxes, kept[0])
        np.testing.assert_array_equal(first.masks.mask(0), kept[1])
        assert set(first.speed) == {"preprocess", "inference", "postprocess"}
        assert all(v >= 0 for v in first.speed.values())


def test_a_failure_inside_the_in_place_call_leaves_the_runtime_working() -> None:
    img = synth_image(4, (360, 480), seed=5)[0]
    with Runtime(DEFAULT_TFLITE) as rt:
        expected = rt(img)
        kept: Dict[str, np.ndarray] = {}

        def read(outputs: Dict[str, np.ndarray]) -> None:
            kept.update(outputs)  # the views escape into the traceback's frames and this dict
            raise ValueError("decoder failed")

        def write(inputs: Dict[str, np.ndarray]) -> None:
            rt._pre(img, out=inputs[rt.input_spec.name])

        with pytest.raises(ValueError, match="decoder failed") as failed:
            rt.backend.run_in_place(write, read)
        kept.clear()  # what the caller holds is the caller's to drop
        # the caller keeps the exception (and so its traceback): the frames in it hold no view
        assert failed.value.__traceback__ is not None
        _same(rt(img), expected)
        del failed

        def bad_write(inputs: Dict[str, np.ndarray]) -> None:
            raise InputError("cannot read the frame")

        with pytest.raises(InputError):
            rt.backend.run_in_place(bad_write, read)
        _same(rt(img), expected)


def test_preprocess_into_a_buffer_equals_a_new_tensor() -> None:
    rng = np.random.default_rng(0)
    specs = [TensorSpec("x", (1, 320, 320, 3), np.dtype(np.float32), None, 0),
             TensorSpec("x", (1, 3, 320, 320), np.dtype(np.float32), None, 0),
             TensorSpec("x", (1, 320, 320, 3), np.dtype(np.float16), None, 0),
             TensorSpec("x", (1, 320, 320, 3), np.dtype(np.int8), 0.0187, -14),
             TensorSpec("x", (1, 320, 320, 3), np.dtype(np.int8), 1 / 255, -128),
             TensorSpec("x", (1, 320, 320, 3), np.dtype(np.uint8), None, 0)]
    for spec in specs:
        pre = Preprocessor(spec, (320, 320))
        for h, w in [(540, 405), (320, 320), (90, 700)]:
            img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            x, lb = pre(img)
            buf = np.full(spec.shape, 7, spec.dtype)
            y, lb2 = pre(img, out=buf)
            assert y is buf and lb2 == lb
            np.testing.assert_array_equal(buf, x)
        with pytest.raises(InputError, match="input buffer of shape"):
            pre(img, out=np.zeros((1, 320, 320), spec.dtype))


def test_integer_inputs_without_a_table_equal_the_quantization_formula() -> None:
    """int8 with scale 1/255 and zero point -128 (what full-integer exports usually take) is the
    pixel with its top bit flipped; uint8 without quantization the raw pixel."""
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (320, 320, 3), dtype=np.uint8)
    rgb = img[..., ::-1]
    q = Preprocessor(TensorSpec("x", (1, 320, 320, 3), np.dtype(np.int8), 1 / 255, -128), (320, 320))
    assert q._xor == 0x80
    np.testing.assert_array_equal(q(img)[0][0], (rgb.astype(np.int16) - 128).astype(np.int8))
    u = Preprocessor(TensorSpec("x", (1, 320, 320, 3), np.dtype(np.uint8), None, 0), (320, 320))
    assert u._xor == 0
    np.testing.assert_array_equal(u(img)[0][0], rgb)
    odd = Preprocessor(TensorSpec("x", (1, 320, 320, 3), np.dtype(np.int8), 0.0187, -14), (320, 320))
    assert odd._xor is None
    expect = np.clip(np.rint(rgb / 255.0 / 0.0187 - 14), -128, 127).astype(np.int8)
    np.testing.assert_array_equal(odd(img)[0][0], expect)


def test_a_view_kept_by_the_caller_is_an_inference_error_until_dropped() -> None:
    """LiteRT refuses to invoke while a view of its tensors lives; a caller of run_in_place that
    keeps one gets an InferenceError naming the backend and model (the vendor error chained),
    and the Runtime works again once the view is gone."""
    img = synth_image(5, (360, 480), seed=5)[0]
    with Runtime(DEFAULT_TFLITE) as rt:
        expected = rt(img)
        leaked = []
        rt.backend.run_in_place(lambda inputs: None, lambda outputs: leaked.extend(outputs.values()))
        with pytest.raises(InferenceError, match=rf"{DEFAULT_TFLITE.name}: the litert backend failed during "
                                                 r"inference \(RuntimeError: .*reference") as info:
            rt(img)
        assert isinstance(info.value.__cause__, RuntimeError)
        del info
        leaked.clear()
        _same(rt(img), expected)
