"""One boundary for vendor errors: Runtime.infer checks feeds (InputError) and turns whatever the
vendor raises into an InferenceError naming backend and model, chained; load-time trial runs turn
files that load but cannot run into ModelLoadError."""
from __future__ import annotations

import numpy as np
import pytest

from _assets import MODELS, require_assets
from edgeseg import Runtime
from edgeseg.errors import InferenceError, InputError, ModelLoadError

ONNX = MODELS / "yolov8n-seg-320-int8dyn.onnx"
TFLITE = MODELS / "yolov8n-seg-640-int8w.tflite"

CASES = [("onnxruntime", ONNX), ("openvino", ONNX), ("litert", TFLITE)]


def _runtime(backend, model):
    require_assets(model)
    pytest.importorskip({"onnxruntime": "onnxruntime", "openvino": "openvino", "litert": "ai_edge_litert"}[backend])
    return Runtime(model, backend=backend)


@pytest.mark.parametrize("backend,model", CASES, ids=[c[0] for c in CASES])
def test_vendor_errors_become_inference_errors(backend, model):
    with _runtime(backend, model) as rt:
        spec = rt.input_spec
        # batch 2 on a batch-1 model: passes edgeseg's feed check (batch is free), the vendor refuses
        x = np.zeros((2,) + tuple(spec.shape[1:]), spec.dtype)
        with pytest.raises(InferenceError, match=rf"{model.name}: the {backend} backend failed during inference") as info:
            rt.infer({spec.name: x})
        assert not isinstance(info.value, InputError)  # a vendor/device failure is not reported as bad input
        assert info.value.__cause__ is not None and type(info.value.__cause__).__module__.split(".")[0] != "edgeseg"


@pytest.mark.parametrize("backend,model", CASES, ids=[c[0] for c in CASES])
def test_feeds_are_checked_before_the_vendor(backend, model):
    with _runtime(backend, model) as rt:
        spec = rt.input_spec
        good = np.zeros((1,) + tuple(spec.shape[1:]), spec.dtype)
        with pytest.raises(InputError, match="expects dtype"):
            rt.infer({spec.name: good.astype(np.float64)})
        with pytest.raises(InputError, match="expects shape"):
            rt.infer({spec.name: good[..., :-1]})
        with pytest.raises(InputError, match="expected inputs"):
            rt.infer({"nope": good})
        assert set(rt.infer({spec.name: good})) == {s.name for s in rt.backend.outputs}


def test_tflite_with_zeroed_buffers_fails_at_load(tmp_path):
    require_assets(TFLITE)
    pytest.importorskip("ai_edge_litert")
    data = bytearray(TFLITE.read_bytes())
    a = len(data) // 12
    data[a:2 * a] = bytes(a)  # weights zeroed: loads and allocates, then invoke() finds tensors without data
    p = tmp_path / "zeroed.tflite"
    p.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=r"zeroed.tflite: LiteRT loads the model but a trial inference on zeros "
                                             r"fails: Input tensor \d+ lacks data"):
        Runtime(p)
