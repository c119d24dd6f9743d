"""TensorRT: ``<name>.engine``, a serialized TensorRT plan behind Ultralytics' metadata header (a
4-byte little-endian length, then the metadata as JSON; :func:`edgeseg.runtimes.tensorrt.write_engine`),
built with the TensorRT Python API (10.x or 11.x) from this package's own ONNX export. Needs
``pip install 'edgeseg[tensorrt]'`` and an NVIDIA GPU: both are checked before the checkpoint is
loaded, and whatever is missing is named in one error.

The network is **strongly typed** (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``): the precision
is the ONNX graph's own, and no precision builder flag is set. That is the one way to build that
works on TensorRT 10 and 11 alike: TensorRT 11 removed ``BuilderFlag.FP16``/``INT8`` and the int8
calibrators (``IInt8EntropyCalibrator2``, deprecated since 10.1) in favour of graphs that carry
their types and explicit Q/DQ nodes. So:

- fp32: the raw-layout ONNX export (``output0``, ``output1``);
- ``half``: the fp16 ONNX export (onnxconverter-common, float32 input and outputs kept), the same
  kind of graph NVIDIA's ModelOpt AutoCast makes for TensorRT 11;
- ``int8``: the static int8 ONNX export (QDQ, per-channel int8 weights, split outputs ``boxes``,
  ``scores``, ``coefs``, ``protos``, decode tail float), calibrated by onnxruntime on ``data``
  letterboxed by the shared reader (:mod:`._int8`), with the float-vs-int8 report of that ONNX graph
  (``int8_accuracy``). TensorRT takes the Q/DQ scales as they are (explicit quantization).

The engine carries the ONNX export's metadata (same keys as every format) plus ``engine``
(TensorRT version, GPU name, precision). Engines are tied to the TensorRT version and the GPU kind
that built them. Not exercised here (no GPU, no TensorRT wheel): only the error paths run in tests.
"""
from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List

from edgeseg.errors import ConversionError

from ._int8 import check_int8_options
from .registry import CALIB_IMAGES, DATA, HALF, INT8, VAL_DATA, Exporter, ExportJob, require

__all__ = ["EXPORTER", "export_engine", "check_build_environment", "WORKSPACE_BYTES"]

#: the builder's workspace memory pool (TensorRT picks tactics that fit; 4 GiB covers YOLO-seg up to x at 1280)
WORKSPACE_BYTES = 4 << 30


def check_build_environment() -> None:
    """ConversionError naming everything this machine lacks to build an engine (the tensorrt package
    with its pip line, a CUDA device as the driver reports it); nothing is imported."""
    from edgeseg.runtimes.tensorrt import missing_for_tensorrt

    missing = missing_for_tensorrt(runtime=False)
    if missing:
        raise ConversionError("TensorRT export builds the engine on an NVIDIA GPU with the tensorrt package; "
                              "this machine lacks " + "; and ".join(missing))


def _check(opts: Dict[str, Any]) -> None:
    check_int8_options(opts, "TensorRT")
    if opts["int8"]:
        require("onnxruntime", "TensorRT --int8 (calibration)")
    if opts["half"]:
        require("onnxconverter_common", "TensorRT --half (the fp16 ONNX graph)")
    check_build_environment()


def _precision(opts: Dict[str, Any]) -> str:
    return "int8" if opts["int8"] else "fp16" if opts["half"] else "fp32"


def _onnx_job(job: ExportJob, path: Path) -> ExportJob:
    """The ONNX export this engine is built from (every ONNX option: ours, or the ONNX default)."""
    from .onnx import DEFAULT_OPSET

    o = job.options
    options = dict(half=o["half"], dynamic=False, opset=DEFAULT_OPSET, simplify=False, int8=o["int8"], data=o["data"],
                   calib_images=o["calib_images"], val_data=o["val_data"], int8_activations="int8")
    return replace(job, options=options, path=path, target=path)


def _onnx_metadata(path: Path) -> Dict[str, Any]:
    import onnx

    from edgeseg.metadata import parse_value

    return {p.key: parse_value(p.value) for p in onnx.load(str(path), load_external_data=False).metadata_props}


def _parse(trt: Any, builder: Any, logger: Any, onnx_path: Path) -> Any:
    flags = 0
    typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if typed is not None:  # 10.x: opt in; 11.x: accepted, always on
        flags |= 1 << int(typed)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors: List[str] = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ConversionError(f"TensorRT's ONNX parser rejected the graph: {'; '.join(errors[:3]) or 'no reason given'}")
    return network, parser


def export_engine(job: ExportJob) -> None:
    """Build ``job.path`` (the engine file, header included)."""
    from edgeseg.runtimes.tensorrt import gpu_name, write_engine

    from .onnx import export_onnx

    precision = _precision(job.options)
    with tempfile.TemporaryDirectory(prefix="edgeseg-trt-") as tmp:
        onnx_path = Path(tmp) / f"{job.name}.onnx"
        export_onnx(_onnx_job(job, onnx_path))  # its stages show on the same progress bar
        meta = _onnx_metadata(onnx_path)  # job.meta, plus the split layout, int8 recipe and report for int8
        with job.stage("TensorRT: parse ONNX (strongly typed network)"):
            import tensorrt as trt

            logger = trt.Logger(trt.Logger.WARNING)
            builder = trt.Builder(logger)
            if builder is None:
                raise ConversionError("TensorRT could not create a builder (no usable CUDA device?)")
            network, parser = _parse(trt, builder, logger, onnx_path)
        with job.stage(f"TensorRT: build the {precision} engine"):
            config = builder.create_builder_config()
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
            plan = builder.build_serialized_network(network, config)
            if plan is None:
                raise ConversionError("TensorRT's builder returned no engine (its log above says why)")
            del parser, network
    with job.stage("write engine"):
        meta["engine"] = {"tensorrt": trt.__version__, "precision": precision, "strongly_typed": True,
                          "built_from": "onnx", "gpu": gpu_name()}
        if "int8_accuracy" in meta:
            meta["engine"]["int8_accuracy_of"] = "the int8 ONNX graph the engine was built from (onnxruntime)"
        with open(job.path, "wb") as f:
            write_engine(f, meta, memoryview(plan))


def _stages(o: Any) -> int:
    onnx_stages = 5 if o.get("int8") else 5 + bool(o.get("half"))
    return onnx_stages + 3


EXPORTER = Exporter(
    name="engine",
    title="TensorRT",
    suffix=".engine",
    description="TensorRT engine (NVIDIA GPU, built here from the ONNX export); --half fp16, --int8 from the "
                "static int8 ONNX",
    contents="one file, metadata header + plan",
    export=export_engine,
    options=(HALF, INT8, DATA, CALIB_IMAGES, VAL_DATA),
    extra="tensorrt",
    backend="tensorrt",
    stages=_stages,
    check=_check,
    order=93,
    notes={"int8": "explicit int8 from the static int8 ONNX (QDQ), activations calibrated on --data"},
)
