"""OpenVINO IR: ``<name>_openvino_model/`` with ``<name>.xml``, ``<name>.bin`` and
``metadata.yaml`` (Ultralytics' place); the IR's ``rt_info`` holds the same keys under ``edgeseg``.

The float32 torch module goes through an intermediate ONNX graph (in a temporary folder; OpenVINO's
ONNX frontend converts in a few seconds where its PyTorch frontend takes several times longer, with
the same result); ``half`` stores the weights as fp16 (``compress_to_fp16``), the compute precision
is chosen at load time by the runtime.

``int8``: NNCF post-training quantization (``nncf.quantize``, preset ``mixed``: symmetric int8
weights, asymmetric int8 activations, as Intel's YOLOv8 notebooks use for SiLU models; model type
left unset, i.e. transformer-free) of the split-layout graph of the ONNX int8 export
(:func:`.onnx.split_onnx`: ``boxes``, ``scores``, ``coefs``, ``protos``), calibrated on ``data``
letterboxed as at inference (:mod:`._int8`). The head's decode tail (:data:`INT8_FLOAT_PARTS`, the
DFL softmax and the box decode) is NNCF's ignored scope, as Intel's YOLOv8-seg notebook keeps its
post-processing subgraph float. At the end the float and int8 IRs are validated on the val split and
the table is stored in the metadata (``int8_accuracy``).
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence

from edgeseg.errors import InputError

from ._int8 import DEFAULT_CALIB_IMAGES, calibration_files, check_int8_options, int8_record, letterboxed, val_report
from .onnx import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAMES, float_nodes, split_meta, split_onnx, torch_to_onnx
from .registry import CALIB_IMAGES, DATA, DYNAMIC, HALF, INT8, VAL_DATA, Exporter, ExportJob, require

__all__ = ["EXPORTER", "export_openvino", "INT8_FLOAT_PARTS"]

#: head parts kept float in int8 IRs (NNCF's ignored scope; see :func:`.onnx.graph_parts`)
INT8_FLOAT_PARTS = ("decode",)


def export_openvino(job: ExportJob) -> None:
    """Export OpenVINO IR into the folder ``job.path``."""
    import tempfile
    from pathlib import Path

    import openvino as ov

    if job.options["int8"]:
        return _export_int8(job)
    # the converted model may map the ONNX file's weights: save the IR before the folder goes
    with tempfile.TemporaryDirectory(prefix="edgeseg-ov-") as tmp:
        onnx_path = Path(tmp) / f"{job.name}.onnx"
        with job.stage("torch.onnx.export (intermediate ONNX)"):
            torch_to_onnx(job.net, job.im, onnx_path, opset=DEFAULT_OPSET, dynamic=job.options["dynamic"])
        with job.stage("openvino.convert_model"):
            ov_model = ov.convert_model(str(onnx_path))
        with job.stage("name tensors"):
            ov_model.inputs[0].get_tensor().set_names({INPUT_NAME})
            for port, out_name in zip(ov_model.outputs, OUTPUT_NAMES):
                port.get_tensor().set_names({out_name})
            _set_rt_info(ov_model, job.meta)
        with job.stage("openvino.save_model"):
            ov.save_model(ov_model, str(job.path / f"{job.name}.xml"), compress_to_fp16=job.options["half"])
        del ov_model
    with job.stage("metadata"):
        job.write_sidecar(job.path)


def _set_rt_info(ov_model: Any, meta: Dict[str, Any]) -> None:
    for k, v in meta.items():
        ov_model.set_rt_info(str(v), ["edgeseg", k])


def ov_names(ov_model: Any, onnx_model: Any, nodes: Sequence[str]) -> List[str]:
    """The OpenVINO op names of the ONNX ``nodes`` of the graph ``ov_model`` was converted from:
    an op keeps the node's name, or (for a node making a graph output) takes its output's name."""
    by_output = {n.name: n.output[0] for n in onnx_model.graph.node if n.output}
    ops: Dict[str, str] = {}
    for op in ov_model.get_ops():
        ops[op.get_friendly_name()] = op.get_friendly_name()
        for port in op.outputs():
            for t in port.get_names():
                ops.setdefault(t, op.get_friendly_name())
    found, missing = [], []
    for n in nodes:
        name = ops.get(n) or ops.get(by_output.get(n, ""))
        (found if name else missing).append(name or n)
    if missing:
        from edgeseg.errors import ConversionError

        raise ConversionError(f"ops {missing[:5]} of the decode tail are not in the converted OpenVINO model")
    return sorted(set(found))


def _export_int8(job: ExportJob) -> None:
    import tempfile

    import nncf
    import onnx
    import openvino as ov

    o = job.options
    float_parts = INT8_FLOAT_PARTS
    files = calibration_files(o["data"], o["calib_images"] or DEFAULT_CALIB_IMAGES)
    xml = job.path / f"{job.name}.xml"
    with tempfile.TemporaryDirectory(prefix="edgeseg-ov-int8-") as tmp:
        fp = Path(tmp) / "float.onnx"
        with job.stage("torch.onnx.export (split layout) + openvino.convert_model"):
            split_onnx(job, fp)
            onnx_model = onnx.load(str(fp))
            ov_model = ov.convert_model(str(fp))
            ignored = ov_names(ov_model, onnx_model, float_nodes(onnx_model, float_parts))
            float_dir = Path(tmp) / "float_openvino_model"
            float_dir.mkdir()
            float_meta = split_meta(job, quantization="fp32")
            _set_rt_info(ov_model, float_meta)
            ov.save_model(ov_model, str(float_dir / "float.xml"), compress_to_fp16=False)
            job.write_sidecar(float_dir, float_meta)
        with job.stage(f"NNCF post-training quantization ({len(files)} calibration images)"):
            calib = nncf.Dataset(list(letterboxed(files, job.imgsz, job.loaded.stride, nhwc=False)))
            with _nncf_quiet():
                q = nncf.quantize(ov_model, calib, preset=nncf.QuantizationPreset.MIXED, subset_size=len(files),
                                  ignored_scope=nncf.IgnoredScope(names=ignored))
        meta = split_meta(job, quantization="int8", int8=int8_record(
            o, len(files), float_parts=float_parts, weights="int8 per-channel (symmetric)",
            activations="8 (asymmetric)", quantizer="nncf.quantize", preset="mixed", ignored_ops=len(ignored)))
        with job.stage("openvino.save_model"):
            _set_rt_info(q, meta)
            ov.save_model(q, str(xml), compress_to_fp16=False)
            job.write_sidecar(job.path, meta)
            del ov_model
        with job.stage("accuracy report (val float vs int8)"):
            report = val_report(float_dir, job.path, o, job.imgsz)
    with job.stage("metadata"):
        if report is not None:
            meta["int8_accuracy"] = report
            _set_rt_info(q, meta)
            ov.save_model(q, str(xml), compress_to_fp16=False)
            job.write_sidecar(job.path, meta)
        del q


@contextlib.contextmanager
def _nncf_quiet() -> Iterator[None]:
    """NNCF logs one INFO line per ignored op and draws its progress bars on stdout: keep its
    warnings, send the bars to stderr (stdout is the CLI's)."""
    import logging

    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        logger.setLevel(level)


def _check(opts: Dict[str, Any]) -> None:
    check_int8_options(opts, "OpenVINO")
    if opts["int8"]:
        if opts["dynamic"]:
            raise InputError("int8 OpenVINO has static shapes (the anchor grid is a constant); drop dynamic")
        require("nncf", "OpenVINO --int8")
        require("onnxruntime", "OpenVINO --int8")


EXPORTER = Exporter(
    name="openvino",
    title="OpenVINO",
    suffix="_openvino_model",
    folder=True,
    folder_files=("*.xml", "*.bin", "*.yaml"),
    description="OpenVINO IR folder; --int8: NNCF post-training int8, split outputs",
    contents="<name>.xml, <name>.bin, metadata.yaml",
    export=export_openvino,
    options=(HALF, DYNAMIC, INT8, DATA, CALIB_IMAGES, VAL_DATA),
    requires=("openvino", "onnx"),
    backend="openvino",
    stages=5,
    check=_check,
    order=20,
    notes={"int8": "NNCF post-training int8, activations calibrated on --data"},
)
