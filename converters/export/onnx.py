"""ONNX: ``<name>.onnx``, one file with the weights inline; metadata in ``metadata_props`` (values
``str(python literal)``, where Ultralytics writes them, so its tools read our class names too).

Opset <= 17 uses torch's TorchScript-based exporter, >= 18 the dynamo exporter. ``half`` converts
the float32 graph to float16 afterwards (onnxconverter-common), keeping float32 input and outputs;
``simplify`` runs onnxslim. :func:`torch_to_onnx` is shared with the formats that convert through
an intermediate ONNX graph (OpenVINO).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from edgeseg.errors import InputError

from .registry import DYNAMIC, HALF, OPSET, SIMPLIFY, Exporter, ExportJob, require

__all__ = ["EXPORTER", "export_onnx", "torch_to_onnx", "INPUT_NAME", "OUTPUT_NAMES", "DEFAULT_OPSET"]

#: tensor names of every raw export (the names Ultralytics uses)
INPUT_NAME = "images"
OUTPUT_NAMES = ("output0", "output1")
DEFAULT_OPSET = 17
#: opset <= 17 uses the TorchScript-based exporter, >= 18 torch's dynamo exporter
DYNAMO_MIN_OPSET = 18
OPSET_RANGE = (11, 23)


def torch_to_onnx(net: Any, im: Any, path: Path, *, opset: int = DEFAULT_OPSET, dynamic: bool = False) -> None:
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
            input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), dynamic_axes=axes,
        )
        return
    shapes = None
    if dynamic:
        from torch.export import Dim

        shapes = {"x": {0: Dim("batch", min=1, max=64), 2: 32 * Dim("h32", min=1, max=256), 3: 32 * Dim("w32", min=1, max=256)}}
    program = torch.onnx.export(
        net, (im,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
        output_names=list(OUTPUT_NAMES), dynamic_shapes=shapes, external_data=False, verbose=False,
    )
    program.save(str(path), external_data=False)


def export_onnx(job: ExportJob) -> None:
    """Export to ONNX at ``job.path`` (single file, weights inline)."""
    import onnx

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
        del model.metadata_props[:]
        for k, v in job.meta.items():
            prop = model.metadata_props.add()
            prop.key, prop.value = k, str(v)
    with job.stage("onnx.checker"):
        onnx.checker.check_model(model)
    with job.stage("write ONNX"):
        onnx.save(model, str(job.path))


def _check(options: Dict[str, Any]) -> None:
    lo, hi = OPSET_RANGE
    if not lo <= int(options["opset"]) <= hi:
        raise InputError(f"opset must be between {lo} and {hi}, got {options['opset']}")
    if options["simplify"]:
        require("onnxslim", "--simplify")
    if options["half"]:
        require("onnxconverter_common", "ONNX --half")


EXPORTER = Exporter(
    name="onnx",
    title="ONNX",
    suffix=".onnx",
    description="ONNX file (onnxruntime, OpenVINO, TensorRT...)",
    contents="one file, weights inline",
    export=export_onnx,
    options=(HALF, DYNAMIC, OPSET, SIMPLIFY),
    defaults={"opset": DEFAULT_OPSET},
    requires=("onnx",),
    backend="onnxruntime",
    stages=lambda o: 5 + bool(o["simplify"]) + bool(o["half"]),
    check=_check,
    order=10,
)
