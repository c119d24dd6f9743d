"""OpenVINO IR: ``<name>_openvino_model/`` with ``<name>.xml``, ``<name>.bin`` and
``metadata.yaml`` (Ultralytics' place); the IR's ``rt_info`` holds the same keys under ``edgeseg``.

The float32 torch module goes through an intermediate ONNX graph (in a temporary folder; OpenVINO's
ONNX frontend converts in a few seconds where its PyTorch frontend takes several times longer, with
the same result); ``half`` stores the weights as fp16 (``compress_to_fp16``), the compute precision
is chosen at load time by the runtime.
"""
from __future__ import annotations

from .onnx import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAMES, torch_to_onnx
from .registry import DYNAMIC, HALF, Exporter, ExportJob

__all__ = ["EXPORTER", "export_openvino"]


def export_openvino(job: ExportJob) -> None:
    """Export OpenVINO IR into the folder ``job.path``."""
    import tempfile
    from pathlib import Path

    import openvino as ov

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
            for k, v in job.meta.items():
                ov_model.set_rt_info(str(v), ["edgeseg", k])
        with job.stage("openvino.save_model"):
            ov.save_model(ov_model, str(job.path / f"{job.name}.xml"), compress_to_fp16=job.options["half"])
        del ov_model
    with job.stage("metadata"):
        job.write_sidecar(job.path)


EXPORTER = Exporter(
    name="openvino",
    title="OpenVINO",
    suffix="_openvino_model",
    folder=True,
    folder_files=("*.xml", "*.bin", "*.yaml"),
    description="OpenVINO IR folder",
    contents="<name>.xml, <name>.bin, metadata.yaml",
    export=export_openvino,
    options=(HALF, DYNAMIC),
    requires=("openvino", "onnx"),
    backend="openvino",
    stages=5,
    order=20,
)
