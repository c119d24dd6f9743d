"""CoreML: ``<name>.mlpackage``, an ML program (``mlprogram``, iOS 16 / macOS 13 or newer) converted
by coremltools from the traced float32 module; metadata in the model's user-defined metadata
(values ``str(python literal)``, as Ultralytics writes them), plus its short description, author,
license and version fields.

The raw layout, named as in every export: input ``images`` float32 ``(1, 3, H, W)`` RGB 0-1 (a
multi-array, so the runtime feeds exactly what it feeds ONNX); outputs ``output0``
``(1, 4+nc+nm, A)`` with boxes in input pixels (``boxes_normalized: False`` in the metadata) and
``output1`` protos ``(1, nm, H/4, W/4)``, both float32.

- fp32: ``compute_precision=FLOAT32``, float32 weights.
- ``half``: ``compute_precision=FLOAT16`` (fp16 weights and compute; input and outputs stay float32).
- ``int8``: the fp16 program with 8-bit weights from
  ``coremltools.optimize.coreml.linear_quantize_weights`` (``linear_symmetric``, one scale per
  output channel, int8; weights under :data:`INT8_WEIGHT_THRESHOLD` elements stay fp16). Weights only:
  CoreML dequantizes them at load time and computes in fp16, so no calibration data is needed.
  Linear rather than 8-bit k-means palettization: per-channel int8 is the same weight scheme as the
  other formats' int8 (one scale per channel, exact zero), is deterministic, and takes seconds where
  k-means takes minutes on a CPU, for the same size (measured: see README's convert matrix).

Prediction needs macOS; on Linux the package is checked by reloading its spec with coremltools.
"""
from __future__ import annotations

import contextlib
import platform
import shutil
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping

from edgeseg.errors import ConversionError, InputError
from edgeseg.runtimes.coreml import PREDICT_SYSTEMS, import_coremltools

from .registry import HALF, INT8, Exporter, ExportJob, quiet_logger

__all__ = ["EXPORTER", "export_coreml", "INPUT_NAME", "OUTPUT_NAMES", "DEPLOYMENT_TARGET", "INT8_WEIGHT_THRESHOLD"]

INPUT_NAME = "images"
OUTPUT_NAMES = ("output0", "output1")
#: ``coremltools.target`` member: the oldest target with compressed (constexpr) weights
DEPLOYMENT_TARGET = "iOS16"
#: weights with fewer elements stay fp16 in --int8 models (coremltools' default, 2048)
INT8_WEIGHT_THRESHOLD = 2048
#: user-defined metadata fields CoreML keeps in dedicated spec fields too
SPEC_FIELDS = {"description": "short_description", "author": "author", "license": "license", "version": "version"}

_PATCH_LOCK = threading.Lock()


def _check(opts: Dict[str, Any]) -> None:
    if opts["int8"] and opts["half"]:
        raise InputError("choose one of half (fp16) and int8, not both (CoreML int8 models already compute in fp16)")


def _import_coremltools() -> Any:
    try:
        return import_coremltools()
    except ImportError as exc:
        raise ConversionError("CoreML export needs coremltools, which could not be imported "
                              f"({exc}); install it with: pip install 'edgeseg[coreml]'") from exc


@contextlib.contextmanager
def _scalar_casts() -> Iterator[None]:
    """coremltools 9.0 converts ``aten::Int`` of a folded one-element tensor with ``int(array)``,
    which numpy >= 2.4 refuses ("only 0-dimensional arrays can be converted to Python scalars";
    apple/coremltools#2633, fixed upstream by #2632 after 9.0). Our head traces ``h * w`` that way.
    For the conversion only, ``int``/``bool`` nodes whose input is such a constant become the
    constant's ``.item()``; every other node goes to coremltools' own converter."""
    import numpy as np

    try:  # private coremltools API: a release that moved it gets no workaround (and needs none, we hope)
        from coremltools.converters.mil import Builder as mb
        from coremltools.converters.mil.frontend.torch import ops
        from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY

        table = _TORCH_OPS_REGISTRY.name_to_func_mapping
        get_inputs = ops._get_inputs
    except (ImportError, AttributeError):
        yield
        return
    with _PATCH_LOCK:
        saved = {name: table.get(name) for name in ("int", "bool")}

        def wrap(name: str, kind: type, orig: Any) -> Any:
            def convert(context: Any, node: Any) -> None:
                x = get_inputs(context, node, expected=1)[0]
                val = x.val if x.can_be_folded_to_const() else None
                if isinstance(val, np.ndarray) and val.size == 1:
                    context.add(mb.const(val=kind(val.reshape(()).item()), name=node.name), node.name)
                    return
                orig(context, node)

            convert.__name__ = name
            return convert

        for name, kind in (("int", int), ("bool", bool)):
            if saved[name] is not None:
                table[name] = wrap(name, kind, saved[name])
        try:
            yield
        finally:
            for name, func in saved.items():
                if func is not None:
                    table[name] = func


def _precision_label(opts: Mapping[str, Any]) -> str:
    return "int8 weights, fp16 compute" if opts["int8"] else "fp16" if opts["half"] else "fp32"


def export_coreml(job: ExportJob) -> None:
    """Convert ``job.net`` to an ML package written into the (empty) folder ``job.path``."""
    import numpy as np
    import torch

    ct = _import_coremltools()
    o = job.options
    fp16 = bool(o["half"] or o["int8"])
    with job.stage("torch.jit.trace"):
        traced = torch.jit.trace(job.net, job.im, strict=False, check_trace=False)
    with job.stage(f"coremltools convert (mlprogram, {'fp16' if fp16 else 'fp32'})"), _scalar_casts(), quiet_logger("coremltools"):
        model = ct.convert(
            traced,
            inputs=[ct.TensorType(name=INPUT_NAME, shape=tuple(job.im.shape), dtype=np.float32)],
            outputs=[ct.TensorType(name=n, dtype=np.float32) for n in OUTPUT_NAMES],
            convert_to="mlprogram",
            minimum_deployment_target=getattr(ct.target, DEPLOYMENT_TARGET),
            compute_precision=ct.precision.FLOAT16 if fp16 else ct.precision.FLOAT32,
            skip_model_load=True,  # loading compiles the model: macOS only, and not needed to save it
        )
    del traced
    meta = dict(job.meta, boxes_normalized=False, coreml={"model_type": "mlprogram",
                                                          "minimum_deployment_target": DEPLOYMENT_TARGET,
                                                          "precision": _precision_label(o)})
    if o["int8"]:
        with job.stage("8-bit weights (linear_quantize_weights, per-channel)"), quiet_logger("coremltools"):
            import coremltools.optimize.coreml as cto

            config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
                mode="linear_symmetric", dtype="int8", granularity="per_channel",
                weight_threshold=INT8_WEIGHT_THRESHOLD))
            model = cto.linear_quantize_weights(model, config=config)
        meta["int8"] = {"weights": "int8 linear symmetric, per output channel", "activations": "fp16",
                        "method": "coremltools.optimize.coreml.linear_quantize_weights",
                        "weight_threshold": INT8_WEIGHT_THRESHOLD, "calibration": None}
    with job.stage("metadata"):
        model.user_defined_metadata.update({str(k): str(v) for k, v in meta.items()})
        for key, attr in SPEC_FIELDS.items():
            if meta.get(key):
                setattr(model, attr, str(meta[key]))
        model.input_description[INPUT_NAME] = "RGB image, letterboxed, 0-1, (1, 3, H, W)"
        model.output_description[OUTPUT_NAMES[0]] = "raw predictions (1, 4+nc+nm, anchors): cx cy w h in pixels, scores, mask coefficients"
        model.output_description[OUTPUT_NAMES[1]] = "mask prototypes (1, nm, H/4, W/4)"
    with job.stage("save mlpackage"):
        _save_into(model, Path(job.path), job.name)
    with job.stage("check package (reload spec)"):
        check_package(Path(job.path), meta)


def _save_into(model: Any, folder: Path, name: str) -> None:
    """``model.save`` wants a path ending in ``.mlpackage`` and replaces whatever is there: save
    into a staging folder inside ``folder`` (the caller's temp folder), then move the package's
    entries up (moves on one file system, inside the temp folder: nothing is put in place here)."""
    staged = folder / f"{name}.mlpackage"
    model.save(str(staged))
    for entry in list(staged.iterdir()):
        shutil.move(str(entry), str(folder / entry.name))
    staged.rmdir()


def check_package(folder: Path, meta: Mapping[str, Any]) -> None:
    """Reload the package's spec (no compile, works off macOS) and check its tensors and metadata."""
    ct = _import_coremltools()
    spec = ct.models.utils.load_spec(str(folder))
    if spec.WhichOneof("Type") != "mlProgram":
        raise ConversionError(f"CoreML export: expected an mlProgram spec, found {spec.WhichOneof('Type')}")
    desc = spec.description
    ins, outs = [f.name for f in desc.input], [f.name for f in desc.output]
    if ins != [INPUT_NAME] or sorted(outs) != sorted(OUTPUT_NAMES):
        raise ConversionError(f"CoreML export: expected input {INPUT_NAME!r} and outputs {list(OUTPUT_NAMES)}, "
                              f"found inputs {ins} and outputs {outs}")
    stored = dict(desc.metadata.userDefined)
    missing = [k for k in meta if k not in stored]
    if missing:
        raise ConversionError(f"CoreML export: metadata keys {missing} did not reach the saved package")


EXPORTER = Exporter(
    name="coreml",
    title="CoreML",
    suffix=".mlpackage",
    folder=True,
    folder_files=("Manifest.json", "Data"),
    description="CoreML ML program (macOS/iOS); --half fp16, --int8 8-bit weights (no calibration)",
    contents="ML package folder, metadata in the model",
    export=export_coreml,
    options=(HALF, INT8),
    requires=("coremltools",),
    extra="coreml",
    backend="coreml",
    bench=platform.system() in PREDICT_SYSTEMS,  # bench runs the export here: CoreML predicts on macOS only
    stages=lambda o: 5 + bool(o.get("int8")),
    check=_check,
    order=97,
    notes={"int8": "8-bit weights only, fp16 compute, no calibration data"},
)
