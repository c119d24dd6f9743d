"""Paddle Inference backend (``pip install 'edgeseg[paddle]'``): PaddlePaddle inference models.

A model is a program file and its weights with the same stem: ``model.json`` (Paddle 3's PIR
program) or ``model.pdmodel`` (the legacy program), plus ``model.pdiparams``. Given as either
file, as the folder holding them, or as an export folder ``<name>_paddle_model/`` with them in
``inference_model/`` (what ``edgeseg convert --to paddle`` and Ultralytics write). A ``.json`` file
counts only beside its ``.pdiparams``. ``metadata.yaml`` (Ultralytics/edgeseg metadata) is read from
the export folder (the program's folder or the one above it).

Options:

* ``device``: ``"cpu"`` (default), ``"gpu"`` or ``"gpu:N"`` (needs a CUDA build of paddlepaddle:
  ``paddlepaddle-gpu``; the CPU wheel raises InputError saying so).
* ``threads``: ``set_cpu_math_library_num_threads``.

oneDNN (MKL-DNN) stays off: Paddle 3.3.1's oneDNN executor rejects the x2paddle graph of a YOLO
model at the first inference (``ConvertPirAttribute2RuntimeAttribute not support
ArrayAttribute<DoubleAttribute>``), so the plain CPU kernels run.

Paddle Inference reports output shapes only after a run, so the model runs once on zeros at load
(when the input size is fixed) to learn them; the decoder then tells the raw predictions
``(1, 4+nc+nm, N)`` from the protos ``(1, nm, H/4, W/4)`` by shape, never by position (the names
are Paddle's ``fetch_name_0``, ``fetch_name_1``...).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from edgeseg.backend import Backend, TensorSpec, ensure_file, register
from edgeseg.errors import BackendUnavailableError, InputError, ModelLoadError

__all__ = ["PaddleBackend", "find_model"]

PROGRAM_SUFFIXES = (".json", ".pdmodel")
PARAMS_SUFFIX = ".pdiparams"
#: where an export folder keeps the inference model
INFERENCE_DIR = "inference_model"


def _pairs(folder: Path) -> List[Tuple[Path, Path]]:
    """(program, weights) pairs directly in ``folder``."""
    out = []
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in PROGRAM_SUFFIXES and p.is_file() and p.with_suffix(PARAMS_SUFFIX).is_file():
            out.append((p, p.with_suffix(PARAMS_SUFFIX)))
    return out


def find_model(path: Path) -> Optional[Tuple[Path, Path]]:
    """(program, weights) for a program file, a ``.pdiparams`` file, a folder holding one pair, or
    an export folder with the pair in ``inference_model/``; None when ``path`` is none of these.
    ModelLoadError when a folder holds several pairs."""
    path = Path(path)
    if path.is_dir():
        pairs = _pairs(path)
        if not pairs and (path / INFERENCE_DIR).is_dir():
            pairs = _pairs(path / INFERENCE_DIR)
        if len(pairs) > 1:
            raise ModelLoadError(f"{path}: folder holds several Paddle models "
                                 f"({', '.join(p.name for p, _ in pairs)}); pass one program file")
        return pairs[0] if pairs else None
    suffix = path.suffix.lower()
    if suffix in PROGRAM_SUFFIXES and path.with_suffix(PARAMS_SUFFIX).exists():
        return path, path.with_suffix(PARAMS_SUFFIX)
    if suffix == PARAMS_SUFFIX:
        for s in PROGRAM_SUFFIXES:
            if path.with_suffix(s).exists():
                return path.with_suffix(s), path
    if suffix == ".pdmodel":  # a legacy program whose weights are missing: ours to report
        return path, path.with_suffix(PARAMS_SUFFIX)
    return None


def _read_metadata(given: Path, program: Path) -> Dict[str, Any]:
    """``metadata.yaml`` of the export: in the folder given, beside the program, or one level up."""
    from edgeseg.metadata import read_sidecar

    for folder in (given if given.is_dir() else None, program.parent, program.parent.parent):
        if folder is not None:
            found = read_sidecar(folder)
            if found:
                return found
    return {}


def _dtype(paddle_dtype: Any) -> np.dtype:
    """``PaddleDType.FLOAT32`` -> float32 (by name; float32 when the name is not numpy's)."""
    name = str(paddle_dtype).rsplit(".", 1)[-1].lower()
    try:
        return np.dtype(name)
    except TypeError:
        return np.dtype(np.float32)


def _device(device: str) -> Tuple[str, int]:
    text = str(device).strip().lower()
    kind, _, index = text.partition(":")
    if kind not in ("cpu", "gpu") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise InputError(f"paddle backend: device must be 'cpu', 'gpu' or 'gpu:N', got {device!r}")
    return kind, int(index or 0)


@register
class PaddleBackend(Backend):
    name = "paddle"
    format = "paddle"
    suffixes = (".json", ".pdmodel", ".pdiparams")
    requires = ("paddle",)
    extra = "paddle"
    priority = 50

    @classmethod
    def handles(cls, path: Path) -> bool:
        try:
            return find_model(Path(path)) is not None
        except (ModelLoadError, OSError):
            return Path(path).is_dir()  # several models in one folder: ours to report

    def __init__(self, model: Path, *, threads: Optional[int] = None, device: str = "cpu", **options: Any) -> None:
        if options:
            raise InputError(f"paddle backend: unknown options {sorted(options)}; expected device")
        if threads is not None and (not isinstance(threads, (int, np.integer)) or threads < 1):
            raise InputError(f"threads must be a positive integer, found {threads!r}")
        kind, index = _device(device)
        model = Path(model)
        ensure_file(model, ["Paddle .json/.pdmodel + .pdiparams"])
        found = find_model(model)
        if found is None:
            raise ModelLoadError(f"{model}: not a Paddle inference model (expected model.json or model.pdmodel beside "
                                 f"model.pdiparams, or an export folder with them in {INFERENCE_DIR}/)")
        self.program, self.params = found
        ensure_file(self.program, ["Paddle program (.json / .pdmodel)"])
        ensure_file(self.params, ["Paddle weights (.pdiparams)"])
        if self.params.stat().st_size == 0:
            raise ModelLoadError(f"{self.params}: file is empty (expected the model's Paddle weights)")
        _check_process()
        try:
            import paddle
            import paddle.inference as pi
        except ImportError as exc:
            raise self.unavailable() from exc
        if kind == "gpu" and not paddle.device.is_compiled_with_cuda():
            raise InputError("paddle backend: device 'gpu' needs a CUDA build of PaddlePaddle (paddlepaddle-gpu); "
                             f"this paddlepaddle {paddle.__version__} is CPU-only")
        self.metadata: Dict[str, Any] = _read_metadata(model, self.program)
        cfg = pi.Config(str(self.program), str(self.params))
        if kind == "gpu":
            cfg.enable_use_gpu(256, index)
        else:
            cfg.disable_gpu()
            cfg.disable_mkldnn()  # see the module docstring
            if threads:
                cfg.set_cpu_math_library_num_threads(int(threads))
        cfg.disable_glog_info()
        try:
            self._predictor: Any = pi.create_predictor(cfg)
        except Exception as exc:  # paddle raises RuntimeError/ValueError... for parse and load errors
            raise ModelLoadError(f"{self.program}: Paddle Inference could not load the model (expected a valid "
                                 f"{self.program.suffix} program with its {self.params.name}): {_first_line(exc)}") from exc
        self.device = "cpu" if kind == "cpu" else f"gpu:{index}"
        self.threads = threads
        self._version = str(paddle.__version__)
        self.inputs = []
        for n in self._predictor.get_input_names():
            h = self._predictor.get_input_handle(n)
            shape = tuple(int(d) if int(d) > 0 else None for d in h.shape())
            self.inputs.append(TensorSpec(n, shape, _dtype(h.type())))
        self._out_names = list(self._predictor.get_output_names())
        self.outputs = [TensorSpec(n, (None,), np.dtype(np.float32)) for n in self._out_names]
        if self.inputs and all(None not in s.shape and s.shape for s in self.inputs):
            try:
                probe = self.run({s.name: np.zeros(s.shape, s.dtype) for s in self.inputs})  # type: ignore[arg-type]
            except Exception as exc:
                raise ModelLoadError(f"{self.program}: Paddle Inference loaded the model but a trial inference on "
                                     f"zeros failed: {_first_line(exc)}") from exc
            self.outputs = [TensorSpec(n, tuple(probe[n].shape), probe[n].dtype) for n in self._out_names]

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        if self._predictor is None:
            raise InputError("paddle backend is closed")
        names = [s.name for s in self.inputs]
        missing = [n for n in names if n not in feeds]
        if missing:
            raise InputError(f"paddle backend: missing inputs {missing}; expected {names}, got {sorted(feeds)}")
        for n in names:
            x = np.ascontiguousarray(feeds[n])
            h = self._predictor.get_input_handle(n)
            h.reshape(list(x.shape))
            h.copy_from_cpu(x)
        # vendor errors are translated once, by Runtime.infer
        self._predictor.run()
        return {n: self._predictor.get_output_handle(n).copy_to_cpu() for n in self._out_names}

    def close(self) -> None:
        self._predictor = None

    def describe(self) -> Dict[str, Any]:
        return {"device": self.device, "threads": self.threads, "onednn": False, "paddle": self._version,
                "program": str(self.program), "params": str(self.params)}


def _first_line(exc: BaseException) -> str:
    """Paddle's message without its C++ hint lines and source locations."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip() and not ln.strip().startswith("[Hint")]
    return ("; ".join(lines[:2]) if lines else type(exc).__name__)[:300]


def _check_process() -> None:
    """PaddlePaddle 3.3 kills the process (SIGSEGV) when it is first imported after TensorFlow 2.21
    (the reverse order works): refuse instead of crashing when TensorFlow is already loaded."""
    import sys

    if "paddle" not in sys.modules and "tensorflow" in sys.modules:
        raise BackendUnavailableError(
            "the paddle backend cannot start in this process: TensorFlow is already imported here, and importing "
            "PaddlePaddle after TensorFlow crashes the process (segmentation fault); run Paddle models in a "
            "process that has not imported TensorFlow (or import paddle first)")
