"""TensorFlow.js graph model: ``<name>_web_model/`` (``model.json``, ``group1-shard*of*.bin``,
``metadata.yaml``), for ``@tensorflow/tfjs`` in a browser or Node.

Made by the tensorflowjs converter (``convert_tf_saved_model``) from the SavedModel of
:mod:`.saved_model` (converted in a temporary folder, or the ``<name>_saved_model/`` beside the
target when edgeseg wrote it from the same checkpoint at the same size), float32 weights in 4 MB
shards. Input ``images`` ``(1, H, W, 3)`` float32 RGB 0-1; ``model.predict`` returns
``{output0, output1}`` by name (structured output names; ``signature.outputs`` is rewritten in
their order, see :func:`_order_signature_outputs`), ``output0`` ``(1, 4+nc+nm, A)`` with
boxes in input pixels, ``output1`` protos NHWC. The metadata keys of every export are in
``model.json``'s ``userDefinedMetadata`` (the format's own place; tfjs adds
``structuredOutputKeys``) and in ``metadata.yaml`` (Ultralytics' place).
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from edgeseg.errors import ConversionError

from ._tf import TF_EXTRA, TF_INSTALL, TF_REQUIRES, import_tfjs_converter, quiet_tf, saved_model_for, tf_meta
from .registry import Exporter, ExportJob

__all__ = ["EXPORTER", "export_tfjs", "SHARD_BYTES"]

#: weight shard size (tensorflowjs' default)
SHARD_BYTES = 4 * 1024 * 1024


def export_tfjs(job: ExportJob) -> None:
    """Write the TF.js graph model into the folder ``job.path``."""
    meta = tf_meta(job.meta)
    with saved_model_for(job) as saved_model:
        with job.stage("tensorflowjs convert_tf_saved_model"):
            conv = import_tfjs_converter()
            # stdout: one "weight ... was auto converted to the type int32" line per int64 constant
            with quiet_tf(), contextlib.redirect_stdout(io.StringIO()):
                conv.convert_tf_saved_model(str(saved_model), str(job.path), signature_def="serving_default",
                                            saved_model_tags="serve", use_structured_outputs_names=True,
                                            weight_shard_size_bytes=SHARD_BYTES,
                                            metadata=json.loads(json.dumps(meta, default=str)))
    with job.stage("metadata"):
        _order_signature_outputs(job.path / "model.json")
        job.write_sidecar(job.path, meta)


def _order_signature_outputs(model_json: Path) -> None:
    """List ``signature.outputs`` in ``structuredOutputKeys`` order (sorted names).

    tfjs-converter's ``GraphModel.predict`` runs the outputs in the order ``signature.outputs``
    lists them and names them by position from ``structuredOutputKeys`` (sorted); the Python
    converter writes ``signature.outputs`` from a protobuf map, in no fixed order. Unordered,
    ``predict`` can hand back the protos as ``output0`` (seen here)."""
    model = json.loads(model_json.read_text(encoding="utf-8"))
    outputs = model["signature"]["outputs"]
    keys = model.get("userDefinedMetadata", {}).get("structuredOutputKeys")
    if sorted(outputs) != keys:
        raise ConversionError(f"{model_json.name}: signature outputs {sorted(outputs)} do not match "
                              f"structuredOutputKeys {keys}")
    model["signature"]["outputs"] = {k: outputs[k] for k in keys}
    model_json.write_text(json.dumps(model), encoding="utf-8")


EXPORTER = Exporter(
    name="tfjs",
    title="TensorFlow.js",
    suffix="_web_model",
    description="TensorFlow.js graph model from the SavedModel (tensorflowjs converter)",
    contents="model.json, group1-shard*.bin, metadata.yaml",
    export=export_tfjs,
    folder=True,
    folder_files=("model.json", "group*-shard*of*.bin", "metadata.yaml"),
    requires=TF_REQUIRES + ("tensorflowjs",),
    extra=TF_EXTRA,
    install=TF_INSTALL,
    backend="",
    bench=False,
    stages=5,
    order=102,
)
