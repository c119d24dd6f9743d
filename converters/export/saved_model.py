"""TensorFlow SavedModel: ``<name>_saved_model/`` (``saved_model.pb``, ``variables/``,
``assets/metadata.yaml``, ``fingerprint.pb``, ``metadata.yaml``).

Converted through ONNX and onnx2tf (:mod:`._tf`, Ultralytics' route). The ``serving_default``
signature takes ``images`` float32 ``(1, H, W, 3)`` (NHWC, RGB 0-1) and returns ``output0``
``(1, 4+nc+nm, A)`` (boxes in input pixels) and ``output1`` protos ``(1, H/4, W/4, nm)`` (NHWC),
float32. The metadata is ``metadata.yaml`` at the top (Ultralytics' place) and the same file as
the SavedModel's tracked asset (``assets/metadata.yaml``), which the ``tensorflow`` backend reads.
"""
from __future__ import annotations

from ._tf import TF_EXTRA, TF_INSTALL, TF_REQUIRES, export_saved_model
from .registry import Exporter, ExportJob

__all__ = ["EXPORTER", "export_saved_model_folder"]


def export_saved_model_folder(job: ExportJob) -> None:
    """Write the SavedModel into the folder ``job.path``."""
    export_saved_model(job, job.path)


EXPORTER = Exporter(
    name="saved_model",
    title="TensorFlow SavedModel",
    suffix="_saved_model",
    description="TensorFlow SavedModel via ONNX + onnx2tf (NHWC input, named outputs, float32)",
    contents="saved_model.pb, variables/, assets/metadata.yaml, metadata.yaml",
    export=export_saved_model_folder,
    folder=True,
    folder_files=("saved_model.pb", "variables", "assets", "fingerprint.pb", "metadata.yaml"),
    requires=TF_REQUIRES,
    extra=TF_EXTRA,
    install=TF_INSTALL,
    backend="tensorflow",
    stages=3,
    order=100,
)
