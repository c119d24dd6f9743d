"""TensorFlow frozen GraphDef: ``<name>.pb``, one file.

Made from the SavedModel of :mod:`.saved_model` (converted in a temporary folder, or the
``<name>_saved_model/`` beside the target when edgeseg wrote it from the same checkpoint at the same
size): its ``serving_default`` function with the variables folded into constants
(``convert_variables_to_constants_v2``), input ``images`` ``(1, H, W, 3)`` float32, outputs
``output0`` / ``output1`` as ``Identity`` nodes of those names. The metadata (the keys of every
export) is JSON in the string Const node ``edgeseg_metadata``, which no output depends on: a
frozen graph has no metadata field, and the file stays self-contained. (Ultralytics writes no
metadata for ``.pb``; its loader looks for a ``*_saved_model/metadata.yaml`` beside the file.)
"""
from __future__ import annotations

from ._tf import TF_EXTRA, TF_INSTALL, TF_REQUIRES, freeze, saved_model_for, tf_meta
from .registry import Exporter, ExportJob

__all__ = ["EXPORTER", "export_pb"]


def export_pb(job: ExportJob) -> None:
    """Write the frozen GraphDef at ``job.path``."""
    with saved_model_for(job) as saved_model:
        with job.stage("freeze (convert_variables_to_constants_v2) + metadata node"):
            data = freeze(saved_model, tf_meta(job.meta))
    with job.stage("write GraphDef"):
        job.path.write_bytes(data)


EXPORTER = Exporter(
    name="pb",
    title="TensorFlow GraphDef",
    suffix=".pb",
    description="TensorFlow frozen GraphDef from the SavedModel (NHWC input, named outputs)",
    contents="one file, metadata in the edgeseg_metadata node",
    export=export_pb,
    requires=TF_REQUIRES,
    extra=TF_EXTRA,
    install=TF_INSTALL,
    backend="tensorflow",
    bench=False,
    stages=5,
    order=101,
)
