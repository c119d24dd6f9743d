"""ONNX: ``<name>.onnx``, one file with the weights inline; metadata in ``metadata_props`` (values
``str(python literal)``, where Ultralytics writes them, so its tools read our class names too).

Opset <= 17 uses torch's TorchScript-based exporter, >= 18 the dynamo exporter. ``half`` converts
the float32 graph to float16 afterwards (onnxconverter-common), keeping float32 input and outputs;
``simplify`` runs onnxslim. :func:`torch_to_onnx` is shared with the formats that convert through
an intermediate ONNX graph (OpenVINO).

``int8`` (static, QDQ format, per-channel int8 weights, int8 activations, float input and outputs)
uses the split layout of the TFLite int8 export (:mod:`edgeseg.converters.tflite_graph`, behind an
NCHW input: ``boxes`` (1, A, 4) normalized 0-1, ``scores`` (1, A, nc) after the sigmoid, ``coefs``
(1, A, nm), ``protos`` (1, nm, H/4, W/4): four tensors, four scales), calibrated by
onnxruntime.quantization on ``data`` letterboxed as at inference (:mod:`._int8`). The graph parts in
:data:`INT8_FLOAT_PARTS` stay float (measured: README's convert matrix). At the end the float and
int8 models are validated on the val split and the table is stored in the metadata
(``int8_accuracy``). :func:`split_onnx` and :func:`graph_parts` are shared with OpenVINO's int8.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Set, Tuple

from edgeseg.errors import ConversionError, InputError

from ._int8 import DEFAULT_CALIB_IMAGES, calibration_files, check_int8_options, int8_record, letterboxed, val_report
from .registry import CALIB_IMAGES, DATA, DYNAMIC, HALF, INT8, OPSET, SIMPLIFY, VAL_DATA, Exporter, ExportJob, require

__all__ = ["EXPORTER", "export_onnx", "torch_to_onnx", "split_onnx", "graph_parts", "INPUT_NAME", "OUTPUT_NAMES",
           "SPLIT_NAMES", "DEFAULT_OPSET", "INT8_FLOAT_PARTS"]

#: tensor names of every raw export (the names Ultralytics uses)
INPUT_NAME = "images"
OUTPUT_NAMES = ("output0", "output1")
#: the int8 (split layout) outputs, the TFLite int8 export's
SPLIT_NAMES = ("boxes", "scores", "coefs", "protos")
#: head parts kept float in int8 ONNX models (see :func:`graph_parts`)
INT8_FLOAT_PARTS = ("decode",)
#: activation type of static int8 ONNX exports (see :func:`_export_int8`)
INT8_ACTIVATIONS = "uint8"

#: calibration images whose activations onnxruntime holds at once (its ranges are merged per range)
CALIB_RANGE = 16
DEFAULT_OPSET = 17
#: opset <= 17 uses the TorchScript-based exporter, >= 18 torch's dynamo exporter
DYNAMO_MIN_OPSET = 18
OPSET_RANGE = (11, 23)


def torch_to_onnx(net: Any, im: Any, path: Path, *, opset: int = DEFAULT_OPSET, dynamic: bool = False,
                  output_names: Sequence[str] = OUTPUT_NAMES) -> None:
    """The bare ONNX graph of ``net`` traced on ``im`` at ``path`` (no metadata): the
    TorchScript-based exporter below opset 18, torch's dynamo exporter from 18 on."""
    import torch

    if opset < DYNAMO_MIN_OPSET:
        axes = None
        if dynamic:
            axes = {
                INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                OUTPUT_NAMES[0]: {0: "batch", 2: "anchors"},
                OUTPUT_NAMES[1]: {0: "batch", 2: "mask_height", 3: "mask_width"},
            }
        torch.onnx.export(
            net, (im,), str(path), dynamo=False, opset_version=opset, do_constant_folding=True,
            input_names=[INPUT_NAME], output_names=list(output_names), dynamic_axes=axes,
        )
        return
    shapes = None
    if dynamic:
        from torch.export import Dim

        shapes = {"x": {0: Dim("batch", min=1, max=64), 2: 32 * Dim("h32", min=1, max=256), 3: 32 * Dim("w32", min=1, max=256)}}
    program = torch.onnx.export(
        net, (im,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
        output_names=list(output_names), dynamic_shapes=shapes, external_data=False, verbose=False,
    )
    program.save(str(path), external_data=False)


def export_onnx(job: ExportJob) -> None:
    """Export to ONNX at ``job.path`` (single file, weights inline)."""
    import onnx

    if job.options["int8"]:
        return _export_int8(job)
    opset, half = int(job.options["opset"]), job.options["half"]
    kind = "TorchScript exporter" if opset < DYNAMO_MIN_OPSET else "dynamo exporter"
    with job.stage(f"torch.onnx.export ({kind}, opset {opset})"):
        torch_to_onnx(job.net, job.im, job.path, opset=opset, dynamic=job.options["dynamic"])
    with job.stage("load ONNX"):
        model = onnx.load(str(job.path))
    if job.options["simplify"]:
        with job.stage("onnxslim"):
            import onnxslim

            model = onnxslim.slim(model)
    if half:
        with job.stage("float16 conversion (onnxconverter-common)"):
            from onnxconverter_common import float16

            model = float16.convert_float_to_float16(model, keep_io_types=True)
    with job.stage("metadata"):
        set_metadata(model, job.meta)
    with job.stage("onnx.checker"):
        onnx.checker.check_model(model)
    with job.stage("write ONNX"):
        onnx.save(model, str(job.path))


def set_metadata(model: Any, meta: Mapping[str, Any]) -> None:
    """Replace ``model.metadata_props`` with ``meta`` (values as ``str(python literal)``)."""
    del model.metadata_props[:]
    for k, v in meta.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = k, str(v)


# --------------------------------------------------------------------------- int8


def split_onnx(job: ExportJob, path: Path) -> None:
    """The float32 split-layout graph at ``path``: the TFLite int8 graph behind an NCHW input, protos
    back to NCHW (the exporter cancels the transpose pairs), optimized by onnxruntime's quantization
    pre-processing (constant folding, shape inference), so the quantizer and the float reference
    of the accuracy report see the same graph."""
    import torch

    from ..tflite_graph import TFLiteGraph

    class NCHWSplit(torch.nn.Module):
        def __init__(self, graph: torch.nn.Module) -> None:
            super().__init__()
            self.graph = graph

        def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
            boxes, scores, coefs, protos = self.graph(x.permute(0, 2, 3, 1))
            return boxes, scores, coefs, protos.permute(0, 3, 1, 2)

    module = NCHWSplit(TFLiteGraph(job.net, job.imgsz, split=True)).eval()
    raw = path.with_name(path.stem + "_raw.onnx")
    torch_to_onnx(module, job.im, raw, opset=int(job.options.get("opset") or DEFAULT_OPSET), output_names=SPLIT_NAMES)
    from onnxruntime.quantization import quant_pre_process

    quant_pre_process(str(raw), str(path), skip_symbolic_shape=True)
    raw.unlink()


def graph_parts(model: Any) -> Dict[str, Set[str]]:
    """Node names of the head's tail in a float split-layout ONNX model (``onnx.ModelProto``):

    - ``decode``: the DFL softmax and the box decode (every node between the concatenated box
      distributions ``(1, A, 4 * reg_max)`` and the ``boxes`` output);
    - ``scores``: the nodes only the ``scores`` output needs after the last per-anchor concat
      (the sigmoid);
    - ``protos``: the nodes only the ``protos`` output depends on (the prototype branch)."""
    import onnx

    g = onnx.shape_inference.infer_shapes(model).graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(g.value_info) + list(g.output) + list(g.input)}
    producer = {o: n for n in g.node for o in n.output}

    def ancestors(t: str, stop: Set[str] = frozenset()) -> Set[str]:  # type: ignore[assignment]
        seen: Set[str] = set()
        todo = [t]
        while todo:
            n = producer.get(todo.pop())
            if n is None or n.name in seen or n.name in stop:
                continue
            seen.add(n.name)
            todo.extend(n.input)
        return seen

    outs = [o.name for o in g.output]
    missing = [r for r in SPLIT_NAMES if r not in outs]
    if missing:
        raise ConversionError(f"split graph outputs {outs}; expected {list(SPLIT_NAMES)}")
    anchors = shapes["boxes"][1]
    up = {r: ancestors(r) for r in SPLIT_NAMES}
    nodes = {n.name: n for n in g.node}

    def per_anchor(name: str, min_c: int) -> bool:
        s = shapes.get(nodes[name].output[0], [])
        return len(s) == 3 and s[1] == anchors and s[2] > min_c

    # the concatenated box distributions: the per-anchor concat of the box path with > 4 channels
    cats = [n for n in up["boxes"] if nodes[n].op_type == "Concat" and per_anchor(n, 4)]
    if len(cats) != 1:
        raise ConversionError(f"cannot find the box-distribution concat of the split graph (found {sorted(cats)})")
    decode = ancestors("boxes", stop=set(cats))
    others = up["boxes"] | up["coefs"]
    cls_cat = [n for n in up["scores"] - others if nodes[n].op_type == "Concat" and per_anchor(n, 0)]
    scores = ancestors("scores", stop=set(cls_cat)) - others
    protos = up["protos"] - others - up["scores"]
    return {"decode": decode, "scores": scores, "protos": protos}


def float_nodes(model: Any, parts: Sequence[str]) -> List[str]:
    """The node names of ``parts`` (see :func:`graph_parts`), sorted."""
    found = graph_parts(model)
    unknown = set(parts) - set(found)
    if unknown:
        raise InputError(f"unknown graph parts {sorted(unknown)}; expected some of {sorted(found)}")
    return sorted(set().union(*(found[p] for p in parts))) if parts else []


def split_meta(job: ExportJob, **extra: Any) -> Dict[str, Any]:
    """The metadata of a split-layout export (float or int8) of this job."""
    return dict(job.meta, output_layout="split", split_outputs={r: r for r in SPLIT_NAMES},
                boxes_normalized=True, **extra)


def _export_int8(job: ExportJob) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    o = job.options
    float_parts = INT8_FLOAT_PARTS
    files = calibration_files(o["data"], o["calib_images"] or DEFAULT_CALIB_IMAGES)
    # activations: uint8 (U8S8, onnxruntime's fast x86 kernels: 1.77x fp32 at 320 here, where int8
    # activations (S8S8) ran at 0.69x; mask -0.66 vs -0.26 points); the TensorRT build asks for int8,
    # the only activation type TensorRT's explicit quantization takes
    act = o.get("int8_activations") or INT8_ACTIVATIONS
    if act not in ("uint8", "int8"):
        raise InputError(f"int8 activations must be 'uint8' or 'int8', got {act!r}")

    class Reader(CalibrationDataReader):
        """The letterboxed images, read one at a time, in ranges of ``stride`` (onnxruntime holds
        every activation of every image of a range in memory, then merges the range's min/max)."""

        def __init__(self) -> None:
            self.set_range(0, len(files))

        def __len__(self) -> int:
            return len(files)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._it = letterboxed(files[start_index:end_index], job.imgsz, job.loaded.stride, nhwc=False)

        def get_next(self) -> Any:
            x = next(self._it, None)
            return None if x is None else {INPUT_NAME: x}

    stride = max(k for k in range(1, min(CALIB_RANGE, len(files)) + 1) if len(files) % k == 0)

    with tempfile.TemporaryDirectory(prefix="edgeseg-onnx-int8-") as tmp:
        fp = Path(tmp) / "float.onnx"
        with job.stage("torch.onnx.export (split layout) + quantization pre-processing"):
            split_onnx(job, fp)
            model = onnx.load(str(fp))
            exclude = float_nodes(model, float_parts)
        with job.stage(f"static int8 quantization, QDQ ({len(files)} calibration images)"):
            quantize_static(
                str(fp), str(job.path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8 if act == "uint8" else QuantType.QInt8,
                weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                extra_options={"CalibStridedMinMax": stride},
            )
        meta = split_meta(job, quantization="int8", int8=int8_record(
            o, len(files), float_parts=float_parts, format="QDQ", calibration_method="MinMax",
            activations=f"8 ({act})",
            quantizer="onnxruntime.quantization.quantize_static"))
        with job.stage("accuracy report (val float vs int8)"):
            set_metadata(model, split_meta(job, quantization="fp32"))
            onnx.save(model, str(fp))
            q = onnx.load(str(job.path))
            set_metadata(q, meta)
            onnx.save(q, str(job.path))
            report = val_report(fp, job.path, o, job.imgsz)
    with job.stage("metadata + onnx.checker"):
        if report is not None:
            meta["int8_accuracy"] = report
        set_metadata(q, meta)
        onnx.checker.check_model(q)
    with job.stage("write ONNX"):
        onnx.save(q, str(job.path))


def _check(options: Dict[str, Any]) -> None:
    lo, hi = OPSET_RANGE
    if not lo <= int(options["opset"]) <= hi:
        raise InputError(f"opset must be between {lo} and {hi}, got {options['opset']}")
    check_int8_options(options, "ONNX")
    if options["int8"]:
        if options["dynamic"]:
            raise InputError("int8 ONNX has static shapes (the anchor grid is a constant); drop dynamic")
        if options["simplify"]:
            raise InputError("int8 ONNX is already optimized (onnxruntime's quantization pre-processing); drop simplify")
        if int(options["opset"]) < 13:
            raise InputError(f"int8 ONNX needs opset 13 or later (per-channel QDQ), got {options['opset']}")
        require("onnxruntime", "ONNX --int8")
    if options["simplify"]:
        require("onnxslim", "--simplify")
    if options["half"]:
        require("onnxconverter_common", "ONNX --half")


EXPORTER = Exporter(
    name="onnx",
    title="ONNX",
    suffix=".onnx",
    description="ONNX file (onnxruntime, OpenVINO, TensorRT...); --int8: static int8 (QDQ), split outputs",
    contents="one file, weights inline",
    export=export_onnx,
    options=(HALF, DYNAMIC, OPSET, SIMPLIFY, INT8, DATA, CALIB_IMAGES, VAL_DATA),
    defaults={"opset": DEFAULT_OPSET},
    requires=("onnx",),
    backend="onnxruntime",
    stages=lambda o: 5 if o["int8"] else 5 + bool(o["simplify"]) + bool(o["half"]),
    check=_check,
    order=10,
    notes={"int8": "static int8 (QDQ): int8 weights, uint8 activations calibrated on --data"},
)
