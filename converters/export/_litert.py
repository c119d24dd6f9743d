"""Shared by the TFLite and Edge TPU exporters: torch -> TFLite through litert-torch, static int8
through litert-quantizer, graph parts that may stay float, the metadata zip and the Edge TPU op
check. The calibration images and the float-vs-int8 accuracy report are :mod:`._int8`'s (shared
with the ONNX and OpenVINO int8 exports).

Heavy imports (torch, litert_torch, litert_quantizer) happen inside the functions.
"""
from __future__ import annotations

import io
import json
import re
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

from edgeseg.errors import ConversionError, InputError

# the calibration reader and the accuracy report are shared with the other int8 formats
from ._int8 import DEFAULT_CALIB_IMAGES, accuracy_report, accuracy_table, calibration_images  # noqa: F401

__all__ = [
    "float_tflite", "fp16_tflite", "calibration_images", "graph_parts", "int8_recipe", "quantize",
    "append_metadata", "split_names", "EDGETPU_OPS", "edgetpu_check", "accuracy_report", "DEFAULT_CALIB_IMAGES",
]

ROLES = ("boxes", "scores", "coefs", "protos")


def float_tflite(net: Any, hw: Tuple[int, int], split: bool) -> bytes:
    """The float32 TFLite flatbuffer of ``net`` (see :mod:`edgeseg.converters.tflite_graph`)."""
    import torch
    import litert_torch

    from ..tflite_graph import RAW_OUTPUTS, SPLIT_OUTPUTS, TFLiteGraph

    names = SPLIT_OUTPUTS if split else RAW_OUTPUTS

    class Named(torch.nn.Module):  # dict outputs name the signature outputs (and the tensors)
        def __init__(self, graph: torch.nn.Module) -> None:
            super().__init__()
            self.body = graph

        def forward(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
            return dict(zip(names, self.body(images)))

    module = Named(TFLiteGraph(net, hw, split=split)).eval()
    sample = (torch.zeros(1, hw[0], hw[1], 3),)
    with _quiet_stdout():
        model = litert_torch.convert(module, sample)
        with tempfile.TemporaryDirectory(prefix="edgeseg-tfl-") as tmp:
            path = Path(tmp) / "float.tflite"
            model.export(str(path))
            return path.read_bytes()


def fp16_tflite(model: bytes) -> bytes:
    """float16 weights (float32 compute after a DEQUANTIZE, float32 input and outputs)."""
    return quantize(model, [{
        "regex": ".*", "operation": "*", "algorithm_key": "float_casting",
        "op_config": {"weight_tensor_config": {"num_bits": 16, "dtype": "FLOAT", "symmetric": True,
                                               "granularity": "TENSORWISE"},
                      "compute_precision": "FLOAT", "explicit_dequantize": True},
    }], None)


def _graph(model: bytes) -> Tuple[Any, Any]:
    from litert_quantizer.utils import tfl_flatbuffer_utils as fu

    m = fu.read_model(bytearray(model))
    return m, m.subgraphs[0]


def _name(t: Any) -> str:
    return t.name.decode() if isinstance(t.name, bytes) else str(t.name)


def split_names(model: bytes) -> Dict[str, str]:
    """Role -> output tensor name of a split-layout TFLite model (names end in ``_<role>_output``)."""
    _, sg = _graph(model)
    out = {}
    for i in sg.outputs:
        n = _name(sg.tensors[i])
        for role in ROLES:
            if re.search(rf"(^|_){role}(_output)?(_dequant)?(:\d+)?$", n):
                out[role] = n
    if set(out) != set(ROLES):
        raise ConversionError(f"converted model outputs {[_name(sg.tensors[i]) for i in sg.outputs]}; "
                              f"expected one output per role {ROLES}")
    return out


def graph_parts(model: bytes) -> Dict[str, Set[int]]:
    """Operator indices of the head's tail in a float split-layout model:

    - ``decode``: the DFL softmax and the box decode (everything between the concatenated box
      distributions and the ``boxes`` output);
    - ``scores``: the sigmoid (and any reshape) after the class logits;
    - ``protos``: the whole prototype branch (ops only the ``protos`` output depends on)."""
    _, sg = _graph(model)
    producer = {o: k for k, op in enumerate(sg.operators) for o in op.outputs}
    outputs = {role: next(i for i in sg.outputs if _name(sg.tensors[i]).endswith(f"{role}_output"))
               for role in ROLES}

    def ancestors(t: int, stop: Set[int] = frozenset()) -> Set[int]:  # type: ignore[assignment]
        seen: Set[int] = set()
        todo = [t]
        while todo:
            k = producer.get(todo.pop())
            if k is None or k in seen or k in stop:
                continue
            seen.add(k)
            todo.extend(i for i in sg.operators[k].inputs if i >= 0)
        return seen

    up = {role: ancestors(t) for role, t in outputs.items()}
    box_shape = list(sg.tensors[outputs["boxes"]].shape)  # (1, A, 4)
    # the concatenated box distributions (1, A, 4 * reg_max): the only 3-D tensor of the box path
    # with all A anchors and more than 4 channels
    dist_cat = [k for k in up["boxes"]
                if list(sg.tensors[sg.operators[k].outputs[0]].shape)[:2] == box_shape[:2]
                and len(sg.tensors[sg.operators[k].outputs[0]].shape) == 3
                and sg.tensors[sg.operators[k].outputs[0]].shape[2] > 4]
    last_cat = max(dist_cat) if dist_cat else None
    decode = ancestors(outputs["boxes"], stop={last_cat} if last_cat is not None else set())
    others = up["boxes"] | up["coefs"]
    scores = {k for k in up["scores"] - others if _is_tail(sg, k, box_shape[1])}
    protos = up["protos"] - others - up["scores"]
    return {"decode": decode, "scores": scores, "protos": protos}


def _is_tail(sg: Any, k: int, anchors: int) -> bool:
    shape = list(sg.tensors[sg.operators[k].outputs[0]].shape)
    return len(shape) == 3 and shape[1] == anchors


def int8_recipe(model: bytes, activations: int = 8, float_parts: Sequence[str] = (),
                integer_io: bool = False) -> List[Dict[str, Any]]:
    """A litert-quantizer recipe: static, int8 per-channel weights, int8 (or int16) activations;
    ``float_parts`` (see :func:`graph_parts`) stay float; ``integer_io`` keeps the integer input and
    outputs the quantizer makes, else QUANTIZE/DEQUANTIZE at the boundary give float ones."""
    from litert_quantizer import recipe

    if activations not in (8, 16):
        raise InputError(f"int8 activations must be 8 or 16 bits, got {activations}")
    rec = list(recipe.static_wi8_ai8() if activations == 8 else recipe.static_wi8_ai16())
    if float_parts:
        parts = graph_parts(model)
        unknown = set(float_parts) - set(parts)
        if unknown:
            raise InputError(f"unknown graph parts {sorted(unknown)}; expected some of {sorted(parts)}")
        ops: Set[int] = set().union(*(parts[p] for p in float_parts))
        rec.append(_no_quantize(_scope_regex(model, ops)))
    if not integer_io:
        rec += [dict(_no_quantize(".*"), operation=op) for op in ("INPUT", "OUTPUT")]
    return rec


def _no_quantize(regex: str) -> Dict[str, Any]:
    return {"regex": regex, "operation": "*", "algorithm_key": "no_quantize", "op_config": {}}


def _scope_regex(model: bytes, ops: Iterable[int]) -> str:
    """A regex matching exactly the quantizer's scope names (output tensor names) of ``ops``."""
    from litert_quantizer.utils import tfl_flatbuffer_utils as fu

    _, sg = _graph(model)
    scopes = sorted({fu.get_op_scope(sg.operators[k], sg.tensors) for k in ops})
    return "^(?:" + "|".join(re.escape(s) for s in scopes) + ")$"


#: how calibration turns per-image activation ranges into one (recorded in the int8 metadata)
CALIBRATION = "MinMax"


def quantize(model: bytes, recipe: List[Dict[str, Any]], calibration: Optional[List[np.ndarray]],
             threads: int = 2) -> bytes:
    """Quantize ``model`` with ``recipe``; static recipes calibrate on ``calibration``.

    Each activation's range is the min and max over all calibration images (:data:`CALIBRATION`).
    ``Quantizer.calibrate`` keeps a moving average of the per-image min/max instead (weight 0.95),
    which shrinks a range to its typical image and clips the rare large values: on yolov8n-seg the
    class logits of confident detections, so every score of bus.jpg above 0.62 read 0.621 (scores
    0.20-0.26 off the ``.pt``; with global min/max 0.03, and val mAP no lower)."""
    from litert_quantizer import calibrator, quantizer, recipe_manager
    from litert_quantizer.utils import qsv_utils

    qt = quantizer.Quantizer(bytearray(model))
    qt.load_quantization_recipe(recipe)
    result = None
    if qt.need_calibration:
        if not calibration:
            raise InputError("static int8 quantization needs calibration images (--data)")
        name = _input_name(model)
        manager = recipe_manager.RecipeManager()
        manager.load_quantization_recipe(recipe)
        cal = calibrator.Calibrator(bytes(model), num_threads=threads, qsv_update_func=qsv_utils.min_max_update)
        with _quiet_stdout():
            cal.calibrate({"serving_default": [{name: x} for x in calibration]}, manager)
        result = cal.get_model_qsvs()
    with _quiet_stdout():
        q = qt.quantize(result, enable_progress_report=False, enable_progress_bar=False)
    return bytes(q.quantized_model)


def _input_name(model: bytes) -> str:
    """The signature's input name (litert-torch names it after the forward argument)."""
    from ai_edge_litert.interpreter import Interpreter

    sig = Interpreter(model_content=bytes(model)).get_signature_list()["serving_default"]
    return sig["inputs"][0]


def append_metadata(path: Path, meta: Mapping[str, Any]) -> None:
    """Append the metadata zip (``metadata.json``) to a .tflite, as Ultralytics does."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("metadata.json", json.dumps(_jsonable(meta), indent=2))
    with open(path, "ab") as f:
        f.write(buf.getvalue())


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    return v


class _quiet_stdout:
    """litert-torch and the quantizer print progress lines on stdout; send them to stderr."""

    def __enter__(self) -> None:
        self._old = sys.stdout
        sys.stdout = sys.stderr

    def __exit__(self, *exc: Any) -> None:
        sys.stdout = self._old


#: Operations the Edge TPU compiler maps (Coral's published list, "Supported operations"); all
#: need int8/uint8 tensors, static shapes and at most 3 dimensions larger than 1.
EDGETPU_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS",
    "FULLY_CONNECTED", "L2_NORMALIZATION", "LOGISTIC", "LSTM", "MAXIMUM", "MAX_POOL_2D", "MEAN",
    "MINIMUM", "MUL", "PACK", "PAD", "PRELU", "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "RELU",
    "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "RSQRT",
    "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM",
    "SQUARED_DIFFERENCE", "TANH", "TRANSPOSE", "TRANSPOSE_CONV", "HARD_SWISH",
})


def edgetpu_check(path: Path) -> List[Dict[str, Any]]:
    """Every op of a TFLite model with whether the Edge TPU maps it and why not: the op is not on
    Coral's list, a tensor is float (not int8/uint8), or a shape is dynamic or has more than three
    dimensions larger than 1. The compiler also runs everything after the first unmapped op on the
    CPU; ``after_cpu`` marks those."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    tensors = {d["index"]: d for d in interp.get_tensor_details()}
    rows: List[Dict[str, Any]] = []
    cpu_seen = False
    for op in interp._get_ops_details():  # noqa: SLF001 - the interpreter's op table
        reasons = []
        name = op["op_name"]
        if name not in EDGETPU_OPS:
            reasons.append("not on the Edge TPU op list")
        outputs = set(op["outputs"])
        for t in list(op["inputs"]) + list(op["outputs"]):
            if t < 0 or t not in tensors:
                continue
            d = tensors[t]
            dt = np.dtype(d["dtype"])
            if dt.kind == "f" and name not in ("QUANTIZE", "DEQUANTIZE"):
                reasons.append(f"float tensor {d['name'][:40]!r}")
                break
            if t not in outputs:  # inputs are activations made by other ops (checked there) or constants
                continue
            shape = [int(v) for v in d.get("shape_signature", d["shape"])]
            if any(v < 0 for v in shape):
                reasons.append(f"dynamic shape {shape}")
                break
            if sum(v > 1 for v in shape) > 3:  # the rule is for activations, not constant filters
                reasons.append(f"activation of shape {shape} has more than 3 dimensions > 1")
                break
        rows.append({"index": op["index"], "op": name, "tpu": not reasons, "reasons": reasons, "after_cpu": cpu_seen})
        cpu_seen = cpu_seen or bool(reasons)
    return rows
