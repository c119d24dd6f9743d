"""The TensorFlow side shared by the SavedModel, frozen GraphDef and TF.js exports.

Route (Ultralytics' route for its TF formats): the fused float32 module -> ONNX (opset 17,
onnxslim: onnx2tf cannot convert the unsimplified anchor ``Expand``) -> onnx2tf 1.29 (a tf_keras
model with an NHWC input; the protos come out NHWC, ``output0`` keeps its ``(1, 4+nc+nm, A)``
layout) -> a ``tf.Module`` whose ``serving_default`` signature takes ``images`` float32
``(1, H, W, 3)`` RGB 0-1 and returns ``output0`` and ``output1`` by name, boxes in input pixels.

onnx2tf runs a check inference on sample images that it downloads unless a file
``calibration_image_sample_data_20x128x128x3_float32.npy`` is in the working directory: the
conversion runs in a temporary folder holding such a file (seeded noise), so nothing is downloaded.

:func:`export_saved_model` writes a SavedModel folder; :func:`freeze` turns one into a frozen
GraphDef; :func:`reusable_saved_model` finds an edgeseg SavedModel beside the target made from the
same checkpoint at the same size (the pb and tfjs exports then skip the conversion).
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import types
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

from edgeseg.errors import ConversionError
from edgeseg.runtimes.tensorflow import METADATA_NODE, SIGNATURE

from .onnx import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAMES, torch_to_onnx
from .registry import ExportJob, quiet_logger

__all__ = ["TF_REQUIRES", "TF_EXTRA", "TF_NO_DEPS", "TF_INSTALL", "SIGNATURE", "METADATA_NODE", "export_saved_model", "write_saved_model",
           "freeze", "reusable_saved_model", "import_tfjs_converter", "quiet_tf"]

#: modules the TF exports need (checked before any work) and the extra that installs them
TF_REQUIRES = ("tensorflow", "tf_keras", "onnx2tf", "onnx_graphsurgeon", "sng4onnx", "psutil", "onnxslim")
TF_EXTRA = "convert-tf"
#: packages whose pinned requirements conflict with TensorFlow 2.21 / numpy 2 (onnx2tf 1.29 pins
#: numpy 1.26, onnx 1.19, protobuf 4; tf-keras asks for the ``tensorflow`` wheel, not
#: ``tensorflow-cpu``; tensorflowjs 4.22 pins TensorFlow 2.19 through TF-DF): installed without
#: their dependencies, after the extra
TF_NO_DEPS = "tf-keras==2.21.0 onnx2tf==1.29.24 tensorflowjs==4.22.0"
TF_INSTALL = f"pip install 'edgeseg[{TF_EXTRA}]' && pip install --no-deps {TF_NO_DEPS}"
#: the sample file onnx2tf reads from the working directory instead of downloading it
_ONNX2TF_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"


@contextlib.contextmanager
def quiet_tf() -> Iterator[None]:
    """TensorFlow's C++ and Python log chatter down to errors while converting."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet_logger("tensorflow"):
        yield


@contextlib.contextmanager
def _in_folder(folder: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(old)


def onnx_to_keras(job: ExportJob, tmp: Path) -> Any:
    """The tf_keras model onnx2tf makes from the job's module (via a slimmed ONNX graph in ``tmp``)."""
    import numpy as np
    import onnx
    import onnxslim

    onnx_path = tmp / f"{job.name}.onnx"
    with job.stage("torch.onnx.export (intermediate ONNX) + onnxslim"):
        torch_to_onnx(job.net, job.im, onnx_path, opset=DEFAULT_OPSET)
        onnx.save(onnxslim.slim(onnx.load(str(onnx_path))), str(onnx_path))
    with job.stage("onnx2tf (ONNX -> tf_keras, NHWC)"):
        with quiet_tf():  # before TensorFlow loads: its C++ log level is read once
            import onnx2tf

        rng = np.random.default_rng(0)
        np.save(tmp / _ONNX2TF_SAMPLE, rng.random((20, 128, 128, 3), dtype=np.float32))
        with _in_folder(tmp), quiet_tf():
            model = onnx2tf.convert(input_onnx_file_path=str(onnx_path), output_folder_path=str(tmp / "onnx2tf"),
                                    not_use_onnxsim=True, disable_model_save=True, verbosity="error",
                                    disable_group_convolution=True, enable_batchmatmul_unfold=True)
    return model


def _outputs_by_name(model: Any) -> Dict[str, int]:
    """Which keras output is ``output0`` (3-D predictions) and which ``output1`` (4-D protos), by rank."""
    ranks = {i: len(t.shape) for i, t in enumerate(model.outputs)}
    by_rank = {r: [i for i, v in ranks.items() if v == r] for r in (3, 4)}
    if len(ranks) != 2 or len(by_rank[3]) != 1 or len(by_rank[4]) != 1:
        shapes = [tuple(t.shape) for t in model.outputs]
        raise ConversionError(f"onnx2tf made outputs {shapes}; expected one 3-D prediction tensor and one 4-D protos "
                              "tensor")
    return {OUTPUT_NAMES[0]: by_rank[3][0], OUTPUT_NAMES[1]: by_rank[4][0]}


def write_saved_model(model: Any, folder: Path, imgsz: Tuple[int, int], meta: Mapping[str, Any]) -> None:
    """Save ``model`` (the onnx2tf keras model) as a SavedModel in ``folder`` with the named
    ``serving_default`` signature, ``metadata.yaml`` at the top (Ultralytics' place) and the same
    file as the SavedModel's asset (``assets/metadata.yaml``, tracked by the object graph)."""
    import yaml

    with quiet_tf():
        import tensorflow as tf
    index = _outputs_by_name(model)
    sidecar = folder / "metadata.yaml"
    sidecar.write_text(yaml.safe_dump(dict(meta), sort_keys=False, allow_unicode=True), encoding="utf-8")
    module = tf.Module()
    module.model = model
    module.metadata = tf.saved_model.Asset(str(sidecar))

    @tf.function(input_signature=[tf.TensorSpec((1, imgsz[0], imgsz[1], 3), tf.float32, name=INPUT_NAME)])
    def serve(images: Any) -> Dict[str, Any]:
        outs = model(images, training=False)
        return {name: tf.identity(outs[i], name=name) for name, i in index.items()}

    module.serve = serve
    with quiet_tf():
        tf.saved_model.save(module, str(folder), signatures={SIGNATURE: serve})


def export_saved_model(job: ExportJob, folder: Path) -> None:
    """Convert the job's module and write the SavedModel into ``folder`` (2 stages + 1)."""
    with tempfile.TemporaryDirectory(prefix="edgeseg-tf-") as tmp:
        model = onnx_to_keras(job, Path(tmp))
        with job.stage("tf.saved_model.save"):
            write_saved_model(model, folder, job.imgsz, tf_meta(job.meta))


def tf_meta(meta: Mapping[str, Any]) -> Dict[str, Any]:
    """The job's metadata plus what the TF graphs add: boxes stay in input pixels."""
    return dict(meta, boxes_normalized=False)


def freeze(saved_model: Path, meta: Mapping[str, Any]) -> bytes:
    """The frozen GraphDef (serialized) of ``saved_model``'s serving signature: variables folded
    into constants (``convert_variables_to_constants_v2``), the input placeholder named ``images``,
    an ``Identity`` per output named ``output0`` / ``output1``, and the metadata as JSON in the
    string Const node :data:`METADATA_NODE` (a frozen graph has no other place for it)."""
    with quiet_tf():
        import tensorflow as tf
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        loaded = tf.saved_model.load(str(saved_model))
        fn = loaded.signatures[SIGNATURE]
        frozen = convert_variables_to_constants_v2(fn)
    gd = frozen.graph.as_graph_def()
    names = list(fn.structured_outputs)  # the flat output order of the frozen function follows the sorted keys
    flat = tf.nest.flatten(fn.structured_outputs)
    if len(frozen.outputs) != len(flat):
        raise ConversionError(f"frozen graph has {len(frozen.outputs)} outputs, the signature {len(flat)}")
    by_name = dict(zip(sorted(names), frozen.outputs))
    placeholders = [n for n in gd.node if n.op == "Placeholder"]
    if len(placeholders) != 1:
        raise ConversionError(f"frozen graph has {len(placeholders)} inputs; expected 1 ({INPUT_NAME})")
    if placeholders[0].name != INPUT_NAME:
        old = placeholders[0].name
        placeholders[0].name = INPUT_NAME
        for node in gd.node:
            node.input[:] = [INPUT_NAME + i[len(old):] if i == old or i.startswith(old + ":") else i for i in node.input]
    for name, tensor in by_name.items():
        node = gd.node.add()
        node.name, node.op = name, "Identity"
        node.input.append(tensor.name[:-2] if tensor.name.endswith(":0") else tensor.name)
        node.attr["T"].type = tensor.dtype.as_datatype_enum
    const = gd.node.add()
    const.name, const.op = METADATA_NODE, "Const"
    const.attr["dtype"].type = tf.string.as_datatype_enum
    const.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(json.dumps(dict(meta), default=str)))
    return gd.SerializeToString()


def reusable_saved_model(job: ExportJob) -> Optional[Path]:
    """``<name>_saved_model/`` beside the target when edgeseg wrote it from the same checkpoint
    (sha256), at the same size, with this edgeseg version; else None."""
    import yaml

    folder = job.target.parent / f"{job.name}_saved_model"
    meta_file = folder / "assets" / "metadata.yaml"
    if not (folder / "saved_model.pb").is_file() or not meta_file.is_file():
        return None
    try:
        meta = yaml.safe_load(meta_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(meta, dict):
        return None
    same = all(meta.get(k) == job.meta.get(k) for k in ("source_sha256", "imgsz", "edgeseg_version", "names"))
    return folder if same and meta.get("quantization") == "fp32" else None


@contextlib.contextmanager
def saved_model_for(job: ExportJob) -> Iterator[Path]:
    """A SavedModel of the job: the one beside the target (see :func:`reusable_saved_model`),
    else a fresh conversion in a temporary folder (removed afterwards)."""
    found = reusable_saved_model(job)
    if found is not None:
        with job.stage(f"reuse {found.name} (same checkpoint and size)"):
            pass
        yield found
        return
    with tempfile.TemporaryDirectory(prefix="edgeseg-tf-") as tmp:
        folder = Path(tmp) / f"{job.name}_saved_model"
        folder.mkdir()
        export_saved_model(job, folder)
        yield folder


def import_tfjs_converter() -> Any:
    """``tensorflowjs.converters.tf_saved_model_conversion_v2``.

    tensorflowjs 4.22 imports ``tensorflow_decision_forests`` and ``tensorflow_hub`` at module
    level; neither is needed to convert a plain SavedModel (they serve TF-DF and TF-Hub models), and
    neither installs next to TensorFlow 2.21 (TF-DF pins TensorFlow 2.19; tensorflow_hub 0.16
    needs ``pkg_resources``). Where one cannot be imported, an empty module stands in for it while
    the converter is imported, and is removed from ``sys.modules`` right after."""
    import importlib

    stand_ins = []
    for name in ("tensorflow_decision_forests", "tensorflow_hub"):
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except Exception:  # ImportError, or tensorflow_hub's own ModuleNotFoundError on pkg_resources
            sys.modules[name] = types.ModuleType(name)
            stand_ins.append(name)
    try:
        with quiet_tf():
            from tensorflowjs.converters import tf_saved_model_conversion_v2 as conv
    finally:
        for name in stand_ins:
            sys.modules.pop(name, None)
    return conv
