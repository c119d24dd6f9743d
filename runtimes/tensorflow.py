"""TensorFlow backend (``pip install 'edgeseg[convert-tf]'``, a workstation backend): a SavedModel
folder (``<name>_saved_model/``) or a frozen GraphDef (``<name>.pb``).

- SavedModel: the ``serving_default`` signature (``signature=`` picks another); inputs and
  outputs by the signature's names; metadata from the SavedModel's asset ``assets/metadata.yaml``
  (edgeseg exports; ``metadata.yaml`` at the folder's top, Ultralytics' place, is read by
  :mod:`edgeseg.metadata`).
- Frozen GraphDef: inputs are its ``Placeholder`` nodes, outputs the nodes nothing else consumes
  (Const and NoOp nodes aside), by name; metadata from the JSON string Const node
  ``edgeseg_metadata`` (edgeseg exports).

Layout quirks (NHWC input and protos, boxes in pixels or normalized) are read from the tensor
shapes and the metadata by :mod:`edgeseg.layout`, as for every backend. ``threads`` sets
TensorFlow's intra-op thread count; TensorFlow fixes it when it first runs, so a later Runtime in
the same process with another count keeps the first one (``describe()`` says which applies).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from edgeseg.backend import Backend, TensorSpec, ensure_file, register
from edgeseg.errors import InputError, ModelLoadError
from edgeseg.metadata import read_sidecar

__all__ = ["TensorFlowBackend", "METADATA_NODE", "SIGNATURE"]

SIGNATURE = "serving_default"
#: the string Const node of an edgeseg frozen GraphDef holding its metadata (JSON)
METADATA_NODE = "edgeseg_metadata"
_NOT_OUTPUTS = ("Const", "NoOp", "Placeholder")


@register
class TensorFlowBackend(Backend):
    name = "tensorflow"
    format = "tensorflow"
    suffixes = (".pb",)
    requires = ("tensorflow",)
    extra = "convert-tf"
    priority = 60

    def __init__(self, model: Path, *, threads: Optional[int] = None, signature: str = SIGNATURE,
                 **options: Any) -> None:
        if options:
            raise InputError(f"tensorflow backend: unknown options {sorted(options)}; expected signature")
        try:
            import tensorflow as tf
        except ImportError as exc:
            raise self.unavailable() from exc
        self._tf = tf
        self.path = Path(model)
        if self.path.name == "saved_model.pb":  # the SavedModel's own graph file: open its folder
            self.path = self.path.parent
        self._threads = self._set_threads(tf, threads)
        if self.path.is_dir():
            self._load_saved_model(tf, signature)
        else:
            ensure_file(self.path, ["frozen GraphDef (.pb)", "SavedModel folder"])
            self._load_graph_def(tf)
        self._version = tf.__version__

    @classmethod
    def handles(cls, path: Path) -> bool:
        if path.is_dir():
            return (path / "saved_model.pb").is_file()
        return path.suffix.lower() in cls.suffixes

    @staticmethod
    def _set_threads(tf: Any, threads: Optional[int]) -> Optional[int]:
        if threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            except RuntimeError:  # TensorFlow already initialized its thread pools in this process
                pass
        return tf.config.threading.get_intra_op_parallelism_threads() or None

    # -- SavedModel ---------------------------------------------------------------------------
    def _load_saved_model(self, tf: Any, signature: str) -> None:
        if not (self.path / "saved_model.pb").is_file():
            raise ModelLoadError(f"{self.path}: not a SavedModel folder (expected saved_model.pb inside)")
        try:
            self._obj = tf.saved_model.load(str(self.path))
        except Exception as exc:  # tf raises OSError, ValueError, errors.* for damaged files
            raise ModelLoadError(f"{self.path}: TensorFlow cannot load the SavedModel: {_first_line(exc)}") from exc
        sigs = dict(self._obj.signatures)
        if signature not in sigs:
            raise ModelLoadError(f"{self.path}: SavedModel has no signature {signature!r}; it has "
                                 f"{', '.join(sorted(sigs)) or 'none'}")
        self._fn = sigs[signature]
        args = self._fn.structured_input_signature[1]
        self.inputs = [_spec(name, s.shape, s.dtype) for name, s in sorted(args.items())]
        outs = self._fn.structured_outputs
        if not isinstance(outs, dict):
            raise ModelLoadError(f"{self.path}: signature {signature!r} returns unnamed outputs; expected a dict "
                                 "of named tensors")
        self.outputs = [_spec(name, t.shape, t.dtype) for name, t in sorted(outs.items())]
        self.metadata = read_sidecar(self.path / "assets")  # the SavedModel's tracked metadata.yaml asset
        self._kind = f"SavedModel ({signature})"
        self._run = self._run_saved_model

    def _run_saved_model(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        out = self._fn(**{k: self._tf.constant(v) for k, v in feeds.items()})
        return {k: v.numpy() for k, v in out.items()}

    # -- frozen GraphDef -----------------------------------------------------------------------
    def _load_graph_def(self, tf: Any) -> None:
        gd = tf.compat.v1.GraphDef()
        try:
            gd.ParseFromString(self.path.read_bytes())
        except Exception as exc:  # google.protobuf.message.DecodeError
            raise ModelLoadError(f"{self.path}: not a TensorFlow GraphDef (protobuf parse failed: "
                                 f"{_first_line(exc)})") from exc
        consumed = {i.lstrip("^").split(":")[0] for n in gd.node for i in n.input}
        placeholders = [n.name for n in gd.node if n.op == "Placeholder"]
        outputs = [n.name for n in gd.node if n.name not in consumed and n.op not in _NOT_OUTPUTS]
        if not placeholders or not outputs:
            raise ModelLoadError(f"{self.path}: expected a frozen graph with Placeholder inputs and output nodes, "
                                 f"found {len(placeholders)} inputs and {len(outputs)} outputs in {len(gd.node)} nodes")
        self.metadata = _graph_metadata(gd, self.path)
        try:
            wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(gd, name=""), [])
            graph = wrapped.graph
            self._fn = wrapped.prune(feeds=[graph.get_tensor_by_name(f"{n}:0") for n in placeholders],
                                     fetches=[graph.get_tensor_by_name(f"{n}:0") for n in outputs])
        except Exception as exc:  # ValueError / InvalidArgumentError for graphs TF cannot import
            raise ModelLoadError(f"{self.path}: TensorFlow cannot import the graph: {_first_line(exc)}") from exc
        ins = [graph.get_tensor_by_name(f"{n}:0") for n in placeholders]
        outs = [graph.get_tensor_by_name(f"{n}:0") for n in outputs]
        self.inputs = [_spec(n, t.shape, t.dtype) for n, t in zip(placeholders, ins)]
        self.outputs = [_spec(n, t.shape, t.dtype) for n, t in zip(outputs, outs)]
        self._in_order = placeholders
        self._kind = "frozen GraphDef"
        self._run = self._run_graph_def

    def _run_graph_def(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        res = self._fn(*[self._tf.constant(feeds[n]) for n in self._in_order])
        return {s.name: r.numpy() for s, r in zip(self.outputs, res)}

    # -- interface ------------------------------------------------------------------------------
    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return self._run(feeds)

    def close(self) -> None:
        self._fn = None
        self._obj = None

    def describe(self) -> Dict[str, Any]:
        return {"runtime": f"tensorflow {self._version}", "model": self._kind, "threads": self._threads}


def _spec(name: str, shape: Any, dtype: Any) -> TensorSpec:
    dims: Tuple[Optional[int], ...] = tuple(shape.as_list()) if shape.rank is not None else ()
    return TensorSpec(name, dims, np.dtype(dtype.as_numpy_dtype))


def _graph_metadata(gd: Any, path: Path) -> Dict[str, Any]:
    nodes: List[Any] = [n for n in gd.node if n.name == METADATA_NODE and n.op == "Const"]
    if not nodes:
        return {}
    raw = nodes[0].attr["value"].tensor.string_val
    try:
        value = json.loads(raw[0].decode("utf-8")) if raw else None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelLoadError(f"{path}: node {METADATA_NODE!r} is not JSON metadata: {exc}") from exc
    if not isinstance(value, dict):
        raise ModelLoadError(f"{path}: node {METADATA_NODE!r} holds {type(value).__name__}; expected a JSON object")
    return value


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else repr(exc))[:400]
