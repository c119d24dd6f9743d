"""LiteRT / TFLite backend (``pip install 'edgeseg[tflite]'``), with the Edge TPU delegate.

Uses ``ai_edge_litert`` and falls back to ``tflite_runtime`` (which needs numpy<2). XNNPACK is
LiteRT's default CPU delegate; ``threads`` sets its thread count. ``delegate="edgetpu"`` (or a
library path) loads an external delegate; ``*_edgetpu.tflite`` models use the Edge TPU delegate
automatically, with ``device`` ("usb", "usb:0", "pci:0") passed to it.
"""
from __future__ import annotations

import platform
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, Optional, TypeVar

import numpy as np

from edgeseg.backend import Backend, TensorSpec, ensure_file, register
from edgeseg.errors import BackendUnavailableError, InferenceError, InputError, ModelLoadError
from edgeseg.metadata import read_tflite_zip_metadata
from edgeseg.tflite_file import read_tflite

#: Edge TPU delegate library per OS (as pycoral names them)
EDGETPU_LIBRARY = {
    "Linux": "libedgetpu.so.1",
    "Darwin": "libedgetpu.1.dylib",
    "Windows": "edgetpu.dll",
}

TFLITE_MAGIC = b"TFL3"

T = TypeVar("T")


def _interpreter_api() -> Any:
    """(Interpreter, load_delegate, module name) from ai_edge_litert, else tflite_runtime."""
    try:
        from ai_edge_litert import interpreter as api

        return api.Interpreter, api.load_delegate, "ai_edge_litert"
    except ImportError as first:
        try:
            from tflite_runtime import interpreter as api  # type: ignore[no-redef]

            return api.Interpreter, api.load_delegate, "tflite_runtime"
        except ImportError:
            raise first from None


def _load_delegate(load_delegate: Any, lib: str, opts: Dict[str, Any], what: str) -> Any:
    """``load_delegate`` with a clear BackendUnavailableError when the library or the device is
    missing. The library is opened with ctypes first, so a missing one never reaches the vendor's
    ``Delegate`` (whose ``__del__`` prints "Exception ignored ... no attribute '_library'" after a
    failed load); when the vendor fails anyway, that noise is swallowed."""
    import ctypes
    import gc
    import sys

    hint = ("For the Edge TPU install the Edge TPU runtime (libedgetpu) and plug in the accelerator; "
            "`edgeseg info` describes the model without it.")
    try:
        ctypes.CDLL(lib)
    except OSError as exc:
        raise BackendUnavailableError(f"cannot load the {what} delegate: {lib} is not installed ({exc}). {hint}") from exc
    hook = sys.unraisablehook

    def quiet(unraisable: Any) -> None:  # the vendor Delegate's __del__ after a failed __init__
        if not (isinstance(unraisable.exc_value, AttributeError) and "_library" in str(unraisable.exc_value)):
            hook(unraisable)

    sys.unraisablehook = quiet
    try:
        return load_delegate(lib, opts)
    except (ValueError, OSError, RuntimeError) as exc:
        message = str(exc)
        exc.__traceback__ = None  # drop the frames holding the half-made Delegate now, while quiet
        gc.collect()
        raise BackendUnavailableError(f"cannot load the {what} delegate ({lib}): {message}. {hint}") from exc
    finally:
        gc.collect()
        sys.unraisablehook = hook


@register
class LiteRTBackend(Backend):
    name = "litert"
    format = "tflite"
    suffixes = (".tflite",)
    requires = ("ai_edge_litert", "tflite_runtime")
    extra = "tflite"
    priority = 10
    in_place = True

    def __init__(self, model: Path, *, threads: Optional[int] = None, delegate: Optional[str] = None,
                 device: Optional[str] = None, **options: Any) -> None:
        if options:
            raise InputError(f"litert backend: unknown options {sorted(options)}; expected delegate, device")
        try:
            Interpreter, load_delegate, self._module = _interpreter_api()
        except ImportError as exc:
            raise self.unavailable() from exc
        ensure_file(model, ["TFLite (.tflite)"])
        with open(model, "rb") as f:
            head = f.read(8)
        if head[4:8] != TFLITE_MAGIC:
            raise ModelLoadError(f"{model}: not a TFLite flatbuffer (expected identifier 'TFL3' at byte 4, found {head[4:8]!r})")
        self.file = read_tflite(model)  # the flatbuffer itself: ops, Edge TPU, quantization
        if delegate is None and (self.file.edgetpu or model.name.endswith("_edgetpu.tflite")):
            delegate = "edgetpu"
        delegates = []
        self._delegate = None
        if delegate:
            lib = EDGETPU_LIBRARY.get(platform.system(), "libedgetpu.so.1") if delegate == "edgetpu" else delegate
            delegates.append(_load_delegate(load_delegate, lib, {"device": device} if device else {}, delegate))
            self._delegate = lib
        try:
            self._interp = Interpreter(model_path=str(model), num_threads=threads,
                                       experimental_delegates=delegates or None)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"{model}: LiteRT cannot load it: {str(exc).strip()[:400]}") from exc
        self._trial_invoke(model)
        self.inputs = [self._spec(d) for d in self._interp.get_input_details()]
        self.outputs = [self._spec(d) for d in self._interp.get_output_details()]
        self._in_index = {d["name"]: d["index"] for d in self._interp.get_input_details()}
        self._out_index = {d["name"]: d["index"] for d in self._interp.get_output_details()}
        self.metadata: Dict[str, Any] = read_tflite_zip_metadata(model)
        self._threads = threads
        self._model = model
        self._weights = self._weight_types()

    def _trial_invoke(self, model: Path) -> None:
        """One inference on zeros at load: a file whose buffers were zeroed or cut loads, then fails
        at invoke() ("Input tensor N lacks data"); that is a load error, reported here."""
        try:
            for d in self._interp.get_input_details():
                self._interp.set_tensor(d["index"], np.zeros(d["shape"], dtype=d["dtype"]))
            self._interp.invoke()
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"{model}: LiteRT loads the model but a trial inference on zeros fails: "
                                 f"{str(exc).strip()[:400]}") from exc

    def _weight_types(self) -> str:
        """How the tensors are stored: int8 weights (dynamic range), full integer, float16 or float32."""
        kinds = {np.dtype(d["dtype"]).name for d in self._interp.get_tensor_details()}
        io_int = any(s.quantized for s in self.inputs + self.outputs)
        if "int8" in kinds or "uint8" in kinds:
            return "int8 weights and activations" if io_int else "int8 weights (dynamic range quantization), float activations"
        if "float16" in kinds:
            return "float16 weights"
        return "float32"

    @staticmethod
    def _spec(d: Dict[str, Any]) -> TensorSpec:
        scale, zp = d.get("quantization", (0.0, 0))
        dtype = np.dtype(d["dtype"])
        shape = tuple(int(v) if v > 0 else None for v in d.get("shape_signature", d["shape"]))
        quant = np.issubdtype(dtype, np.integer) and scale not in (0, 0.0)
        return TensorSpec(d["name"], shape, dtype, float(scale) if quant else None, int(zp) if quant else 0)

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        for name, arr in feeds.items():
            self._interp.set_tensor(self._in_index[name], arr)
        self._interp.invoke()
        # get_tensor copies, so results stay valid across invocations
        return {name: self._interp.get_tensor(i) for name, i in self._out_index.items()}

    def run_in_place(self, write: Callable[[Dict[str, np.ndarray]], None],
                     read: Callable[[Dict[str, np.ndarray]], T]) -> T:
        """The input written straight into the interpreter's input tensor and the outputs read
        where the interpreter left them: no ``set_tensor`` / ``get_tensor`` copies (about 0.5 ms a
        frame for a float 640 model). LiteRT refuses ``invoke`` while a numpy view of its memory is
        alive, so every view is dropped before this returns, also when ``write`` or ``read`` fail
        (the locals of their frames in the traceback are cleared)."""
        try:
            views = {n: self._interp.tensor(i)() for n, i in self._in_index.items()}
            write(views)
            views = {}
            try:
                self._interp.invoke()
            except (ValueError, RuntimeError) as exc:
                raise InferenceError.from_vendor(self._model.name, self.name, exc) from exc
            views = {n: self._interp.tensor(i)() for n, i in self._out_index.items()}
            return read(views)
        except BaseException as exc:
            traceback.clear_frames(exc.__traceback__)
            raise
        finally:
            views = {}

    def close(self) -> None:
        self._interp = None

    def describe(self) -> Dict[str, Any]:
        return {"runtime": self._module, "delegate": self._delegate or "XNNPACK (CPU)", "threads": self._threads,
                "weights": self._weights}
