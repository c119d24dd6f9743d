"""TensorRT backend: ``.engine`` files (``pip install 'edgeseg[tensorrt]'`` and an NVIDIA GPU).

Why a TensorRT backend and not ONNX Runtime's TensorRT provider: a ``.engine`` file is a serialized
TensorRT plan, which ONNX Runtime cannot open (its TensorRT provider builds its own engines from an
``.onnx`` file; that path already works through the onnxruntime backend with
``providers=["tensorrt"]``). Running the plan needs the ``tensorrt`` runtime plus device memory;
device memory comes from NVIDIA's ``cuda-python`` (``cuda.bindings.runtime``, the CUDA runtime API
that TensorRT's own samples use), so no torch is involved.

File layout (Ultralytics' ``.engine``, which edgeseg also writes): a 4-byte little-endian signed
length ``n``, ``n`` bytes of UTF-8 JSON metadata (the usual keys: names, imgsz, stride, task...),
then the plan. A plan without that header (``trtexec --saveEngine``) is read as an engine without
metadata. :func:`read_engine_header` / :func:`write_engine` are pure Python and run anywhere.

Availability is checked before any work, without importing a vendor module: the ``tensorrt``
package (``importlib.util.find_spec``), ``cuda-python`` for the runtime, and a CUDA device asked of
the NVIDIA driver itself (``libcuda``: ``cuInit`` + ``cuDeviceGetCount`` through ctypes). Whatever is
missing is named in one :class:`~edgeseg.errors.BackendUnavailableError`.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import sys
from pathlib import Path
from typing import Any, BinaryIO, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from edgeseg.backend import Backend, TensorSpec, ensure_file, module_available, register
from edgeseg.errors import BackendUnavailableError, InferenceError, InputError, ModelLoadError

__all__ = ["TensorRTBackend", "read_engine_header", "write_engine", "engine_header", "cuda_device_problem", "gpu_name",
           "missing_for_tensorrt", "PIP_LINE", "MAX_METADATA_BYTES"]

#: what installs the Python side (tensorrt + cuda-python); the GPU driver comes with the system
PIP_LINE = "pip install 'edgeseg[tensorrt]'"
#: a metadata header larger than this is not believed (Ultralytics' are a few kB)
MAX_METADATA_BYTES = 16 * 1024 * 1024
#: the NVIDIA driver library, per OS (the probe loads it; nothing else does)
DRIVER_LIBRARIES = {"linux": ("libcuda.so.1", "libcuda.so"), "win32": ("nvcuda.dll",)}
#: cuda-python module names, newest first (``cuda.cudart`` is the pre-12.6 spelling)
CUDART_MODULES = ("cuda.bindings.runtime", "cuda.cudart")


# ------------------------------------------------------------------------------ the file header


def engine_header(meta: Mapping[str, Any]) -> bytes:
    """The Ultralytics metadata header for ``meta``: 4-byte little-endian length + ASCII JSON
    (``ensure_ascii``, so readers that count characters, as Ultralytics' writer does, agree)."""
    text = json.dumps(dict(meta), ensure_ascii=True, default=str).encode("ascii")
    if len(text) > MAX_METADATA_BYTES:
        raise InputError(f"engine metadata is {len(text)} bytes; expected at most {MAX_METADATA_BYTES}")
    return len(text).to_bytes(4, byteorder="little", signed=True) + text


def write_engine(dest: Union[str, Path, BinaryIO], meta: Mapping[str, Any], plan: Union[bytes, memoryview]) -> None:
    """Write ``header(meta) + plan`` to ``dest`` (a path or a binary file object)."""
    if not memoryview(plan).nbytes:
        raise InputError("engine plan is empty; expected the serialized TensorRT engine")
    head = engine_header(meta)
    if isinstance(dest, (str, Path)):
        with open(dest, "wb") as f:
            f.write(head)
            f.write(plan)
        return
    dest.write(head)
    dest.write(plan)


def read_engine_header(path: Union[str, Path]) -> Tuple[Dict[str, Any], int]:
    """``(metadata, offset of the plan)`` of an ``.engine`` file; ``({}, 0)`` for a plan without a
    header. Only the header is read. A header that starts like one (``{`` after the length) but is
    cut short, not UTF-8 JSON, or followed by no plan raises ModelLoadError."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(5)
        if len(head) < 5:
            raise ModelLoadError(f"{path}: {size} bytes is too short for a TensorRT engine")
        n = int.from_bytes(head[:4], byteorder="little", signed=True)
        looks_like_header = head[4:5] == b"{"
        if not looks_like_header:
            return {}, 0  # a bare plan (trtexec --saveEngine)
        if n < 2 or n > MAX_METADATA_BYTES or 4 + n > size:
            raise ModelLoadError(f"{path}: metadata header declares {n} bytes, but the file holds {size - 4} after "
                                 f"the length (expected 2..{min(MAX_METADATA_BYTES, max(size - 4, 2))})")
        f.seek(4)
        raw = f.read(n)
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelLoadError(f"{path}: the metadata header is not UTF-8 JSON ({exc})") from exc
    if 4 + n == size:
        raise ModelLoadError(f"{path}: holds a metadata header but no engine after it")
    return meta, 4 + n


# --------------------------------------------------------------------------- what is missing


def _driver() -> Tuple[Optional[Any], str]:
    """``(the NVIDIA driver library, '')``, or ``(None, why it cannot be loaded)``."""
    names = DRIVER_LIBRARIES.get(sys.platform)
    if names is None:
        return None, f"TensorRT runs on Linux and Windows with an NVIDIA GPU; this is {sys.platform}"
    errors = []
    for name in names + tuple(n for n in [ctypes.util.find_library("cuda")] if n):
        try:
            return ctypes.CDLL(name), ""
        except OSError as exc:
            errors.append(str(exc))
    return None, f"no NVIDIA driver: {names[0]} cannot be loaded ({errors[0] if errors else 'not found'})"


def gpu_name(index: int = 0) -> str:
    """The name of CUDA device ``index`` as the driver reports it, '' when it cannot be asked."""
    lib, _ = _driver()
    buf, dev = ctypes.create_string_buffer(256), ctypes.c_int(0)
    try:
        if lib is not None and lib.cuInit(0) == 0 and lib.cuDeviceGet(ctypes.byref(dev), int(index)) == 0 \
                and lib.cuDeviceGetName(buf, 256, dev) == 0:
            return buf.value.decode("utf-8", "replace")
    except AttributeError:
        pass
    return ""


def cuda_device_problem() -> Optional[str]:
    """None when the NVIDIA driver reports at least one CUDA device, else why not (one sentence).
    Asks the driver library directly (``cuInit``, ``cuDeviceGetCount``): no vendor Python module."""
    lib, why = _driver()
    if lib is None:
        return why
    names = DRIVER_LIBRARIES[sys.platform]
    try:
        rc = lib.cuInit(0)
        if rc != 0:
            return f"the NVIDIA driver found no usable GPU (cuInit returned CUDA error {rc})"
        count = ctypes.c_int(0)
        rc = lib.cuDeviceGetCount(ctypes.byref(count))
    except AttributeError as exc:  # a library of that name without the driver API
        return f"{names[0]} is not the NVIDIA driver ({exc})"
    if rc != 0 or count.value < 1:
        return f"the NVIDIA driver reports no CUDA device (cuDeviceGetCount: error {rc}, {count.value} devices)"
    return None


def missing_for_tensorrt(runtime: bool = True) -> List[str]:
    """What this machine lacks to build (``runtime=False``) or run TensorRT engines, each as a
    phrase naming the fix; [] when nothing is missing. Imports nothing."""
    packages = [] if module_available("tensorrt") else ["'tensorrt'"]
    if runtime and not any(module_available(m) for m in CUDART_MODULES):
        packages.append("'cuda-python'")
    missing = [f"the Python package{'s' if len(packages) > 1 else ''} {' and '.join(packages)} ({PIP_LINE})"] if packages else []
    problem = cuda_device_problem()
    if problem:
        missing.append(f"a CUDA device ({problem})")
    return missing


def _import_cudart() -> Any:
    import importlib

    last: Optional[BaseException] = None
    for name in CUDART_MODULES:
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            last = exc
    raise BackendUnavailableError(f"tensorrt backend needs cuda-python ({PIP_LINE}): {last}") from last


# ---------------------------------------------------------------------------------- the backend


@register
class TensorRTBackend(Backend):
    """TensorRT 10/11 engines on an NVIDIA GPU; tensors in host numpy arrays, copied per call."""

    name = "tensorrt"
    format = "engine"
    suffixes = (".engine",)
    requires = ("tensorrt",)
    extra = "tensorrt"
    priority = 30

    @classmethod
    def unavailable(cls) -> BackendUnavailableError:
        missing = missing_for_tensorrt() or [f"the Python package 'tensorrt' ({PIP_LINE})"]
        return BackendUnavailableError("TensorRT engines (.engine) run only with the tensorrt runtime on an NVIDIA GPU; "
                                       "this machine lacks " + "; and ".join(missing))

    def __init__(self, model: Path, *, threads: Optional[int] = None, device: int = 0, **options: Any) -> None:
        if options:
            raise InputError(f"tensorrt backend: unknown options {sorted(options)}; expected device")
        if not isinstance(device, (int, np.integer)) or device < 0:
            raise InputError(f"tensorrt device must be a GPU index >= 0, found {device!r}")
        ensure_file(Path(model), ["TensorRT (.engine)"])
        if missing_for_tensorrt():
            raise self.unavailable()
        self.path = Path(model)
        meta, offset = read_engine_header(self.path)
        self.metadata: Dict[str, Any] = meta
        import tensorrt as trt

        cudart = _import_cudart()
        self._trt, self._cudart = trt, cudart
        self._buffers: Dict[str, Tuple[int, int]] = {}
        self._stream: Any = None
        self._context: Any = None
        try:
            self._load(offset, int(device))
        except BaseException:
            self.close()
            raise

    def _load(self, offset: int, device: int) -> None:
        trt, cudart = self._trt, self._cudart
        self._call(cudart.cudaSetDevice(device), "cudaSetDevice")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        with open(self.path, "rb") as f:
            f.seek(offset)
            plan = f.read()
        engine = self._runtime.deserialize_cuda_engine(plan)
        del plan
        if engine is None:
            raise ModelLoadError(f"{self.path}: TensorRT {trt.__version__} cannot deserialize the engine (engines only "
                                 "load with the TensorRT version and GPU kind that built them; build it again here)")
        self._engine = engine
        self._context = engine.create_execution_context()
        self.device = device
        self.inputs, self.outputs = [], []
        for i in range(engine.num_io_tensors):
            tname = engine.get_tensor_name(i)
            shape = tuple(int(d) if int(d) >= 0 else None for d in engine.get_tensor_shape(tname))
            spec = TensorSpec(tname, shape, np.dtype(trt.nptype(engine.get_tensor_dtype(tname))))
            is_input = engine.get_tensor_mode(tname) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs).append(spec)
        dynamic = [s.name for s in self.inputs + self.outputs if None in s.shape]
        if dynamic:
            raise ModelLoadError(f"{self.path}: tensors {dynamic} have dynamic shapes; edgeseg runs fixed-shape engines "
                                 "(edgeseg convert --to engine builds one)")
        self._stream = self._call(cudart.cudaStreamCreate(), "cudaStreamCreate")
        for s in self.inputs + self.outputs:
            nbytes = int(np.prod(s.shape)) * s.dtype.itemsize
            ptr = self._call(cudart.cudaMalloc(nbytes), "cudaMalloc")
            self._buffers[s.name] = (int(ptr), nbytes)
            self._context.set_tensor_address(s.name, int(ptr))
        self._version = trt.__version__

    def _call(self, result: Any, what: str) -> Any:
        """cuda-python returns ``(error, *values)``; raise on a non-zero error."""
        err, *values = result if isinstance(result, tuple) else (result,)
        if int(getattr(err, "value", err)) != 0:
            raise InferenceError(f"tensorrt backend: {what} failed with CUDA error {err}")
        return values[0] if len(values) == 1 else tuple(values)

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        if self._context is None:
            raise InputError("tensorrt backend is closed")
        cu = self._cudart
        h2d, d2h = cu.cudaMemcpyKind.cudaMemcpyHostToDevice, cu.cudaMemcpyKind.cudaMemcpyDeviceToHost
        host_in = []
        for s in self.inputs:
            if s.name not in feeds:
                raise InputError(f"tensorrt: missing input {s.name!r}; expected {[i.name for i in self.inputs]}")
            x = np.ascontiguousarray(feeds[s.name], dtype=s.dtype)
            if x.shape != s.shape:
                raise InputError(f"tensorrt: input {s.name!r} must have shape {s.shape}, found {x.shape}")
            host_in.append(x)  # kept alive until the stream is synchronized
            ptr, nbytes = self._buffers[s.name]
            self._call(cu.cudaMemcpyAsync(ptr, x.ctypes.data, nbytes, h2d, self._stream), "cudaMemcpyAsync (input)")
        if not self._context.execute_async_v3(self._stream):
            raise InferenceError(f"tensorrt: execute_async_v3 failed on {self.path.name}")
        out: Dict[str, np.ndarray] = {}
        for s in self.outputs:
            y = np.empty(s.shape, dtype=s.dtype)
            ptr, nbytes = self._buffers[s.name]
            self._call(cu.cudaMemcpyAsync(y.ctypes.data, ptr, nbytes, d2h, self._stream), "cudaMemcpyAsync (output)")
            out[s.name] = y
        self._call(cu.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        del host_in
        return out

    def close(self) -> None:
        cu = getattr(self, "_cudart", None)
        for ptr, _ in getattr(self, "_buffers", {}).values():
            cu.cudaFree(ptr)
        self._buffers = {}
        if getattr(self, "_stream", None) is not None:
            cu.cudaStreamDestroy(self._stream)
            self._stream = None
        self._context = None
        self._engine = None

    def describe(self) -> Dict[str, Any]:
        return {"tensorrt": self._version, "device": self.device}
