"""One function per export format. Each writes its artifact at the temporary path it is given
(the caller renames it into place) and embeds the metadata where the format keeps it:

========== ================================ =================================================
format     artifact                         metadata
========== ================================ =================================================
onnx       ``<name>.onnx``                  ``metadata_props``, values ``str(python literal)``
openvino   ``<name>_openvino_model/`` with  ``metadata.yaml`` in the folder, and the model's
           ``<name>.xml``, ``<name>.bin``   ``rt_info`` under ``edgeseg`` (strings)
torchscript ``<name>.torchscript``          ``_extra_files["config.txt"]`` (JSON)
========== ================================ =================================================

These are the places Ultralytics uses, so Ultralytics (and tools built for its exports) read
our exports' class names and image size too.
"""
from __future__ import annotations

import contextlib
import json
import logging
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional

import torch
from torch import nn

__all__ = ["quiet", "torch_to_onnx", "export_onnx", "export_openvino", "export_torchscript", "INPUT_NAME", "OUTPUT_NAMES", "DEFAULT_OPSET"]

INPUT_NAME = "images"
OUTPUT_NAMES = ("output0", "output1")
#: opset <= 17 uses the TorchScript-based exporter, >= 18 torch's dynamo exporter
DEFAULT_OPSET = 17
DYNAMO_MIN_OPSET = 18

Stage = Callable[[str], Any]  # a context-manager factory: ``with stage("trace"): ...``


def _need(module: str, what: str) -> Any:
    """Import ``module`` or raise ConversionError naming the extra that installs it."""
    import importlib

    from edgeseg.errors import ConversionError

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConversionError(f"{what} needs the Python package {module.split('.')[0]!r}, which is not installed; "
                              f"install it with: pip install 'edgeseg[convert]'") from exc


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the exporters' chatter that says nothing about the user's model (tracer and
    deprecation warnings, the dynamo exporter's "torchvision is not installed" log lines).
    Errors still propagate."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        logger.setLevel(level)


def torch_to_onnx(net: nn.Module, im: torch.Tensor, path: Path, *, opset: int = DEFAULT_OPSET, dynamic: bool = False) -> None:
    """The bare ONNX graph of ``net`` traced on ``im`` at ``path`` (no metadata): the
    TorchScript-based exporter below opset 18, torch's dynamo exporter from 18 on."""
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


def export_onnx(net: nn.Module, im: torch.Tensor, tmp: Path, meta: Dict[str, Any], stage: Stage, *,
                opset: Optional[int], dynamic: bool, simplify: bool, half: bool = False) -> None:
    """Export to ONNX at ``tmp`` (single file, weights inline). ``half`` converts the float32
    graph to float16 afterwards, keeping float32 input and outputs."""
    onnx = _need("onnx", "ONNX export")
    if simplify:
        _need("onnxslim", "--simplify")
    if half:
        _need("onnxconverter_common", "ONNX --half")

    opset = int(opset or DEFAULT_OPSET)
    kind = "TorchScript exporter" if opset < DYNAMO_MIN_OPSET else "dynamo exporter"
    with stage(f"torch.onnx.export ({kind}, opset {opset})"):
        torch_to_onnx(net, im, tmp, opset=opset, dynamic=dynamic)
    with stage("load ONNX"):
        model = onnx.load(str(tmp))
    if simplify:
        with stage("onnxslim"):
            import onnxslim

            model = onnxslim.slim(model)
    if half:
        with stage("float16 conversion (onnxconverter-common)"):
            from onnxconverter_common import float16

            model = float16.convert_float_to_float16(model, keep_io_types=True)
    with stage("metadata"):
        del model.metadata_props[:]
        for k, v in meta.items():
            prop = model.metadata_props.add()
            prop.key, prop.value = k, str(v)
    with stage("onnx.checker"):
        onnx.checker.check_model(model)
    with stage("write ONNX"):
        onnx.save(model, str(tmp))


def export_openvino(net: nn.Module, im: torch.Tensor, folder: Path, name: str, meta: Dict[str, Any], stage: Stage, *,
                    dynamic: bool, half: bool) -> None:
    """Export OpenVINO IR into ``folder``: ``<name>.xml``, ``<name>.bin`` and ``metadata.yaml``.

    The float32 torch module goes through an intermediate ONNX graph (in a temporary folder;
    OpenVINO's ONNX frontend converts in a few seconds where its PyTorch frontend takes several
    times longer, with the same result); ``half`` stores the weights as fp16
    (``compress_to_fp16``), the compute precision is chosen at load time by the runtime."""
    import tempfile

    import yaml

    ov = _need("openvino", "OpenVINO export")
    _need("onnx", "OpenVINO export (through ONNX)")
    # the converted model may map the ONNX file's weights: save the IR before the folder goes
    with tempfile.TemporaryDirectory(prefix="edgeseg-ov-") as tmp:
        onnx_path = Path(tmp) / f"{name}.onnx"
        with stage("torch.onnx.export (intermediate ONNX)"):
            torch_to_onnx(net, im, onnx_path, opset=DEFAULT_OPSET, dynamic=dynamic)
        with stage("openvino.convert_model"):
            ov_model = ov.convert_model(str(onnx_path))
        with stage("name tensors"):
            ov_model.inputs[0].get_tensor().set_names({INPUT_NAME})
            for port, out_name in zip(ov_model.outputs, OUTPUT_NAMES):
                port.get_tensor().set_names({out_name})
            for k, v in meta.items():
                ov_model.set_rt_info(str(v), ["edgeseg", k])
        with stage("openvino.save_model"):
            ov.save_model(ov_model, str(folder / f"{name}.xml"), compress_to_fp16=half)
        del ov_model
    with stage("metadata"):
        text = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
        (folder / "metadata.yaml").write_text(text, encoding="utf-8")


def export_torchscript(net: nn.Module, im: torch.Tensor, tmp: Path, meta: Dict[str, Any], stage: Stage) -> None:
    """Trace to TorchScript at ``tmp``; metadata as JSON in ``_extra_files["config.txt"]``."""
    with stage("torch.jit.trace"):
        ts = torch.jit.trace(net, im, strict=False, check_trace=False)
    with stage("write TorchScript"):
        ts.save(str(tmp), _extra_files={"config.txt": json.dumps(meta)})
