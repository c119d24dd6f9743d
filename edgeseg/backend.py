"""The backend interface: named numpy arrays in, named numpy arrays out.

A backend is one module in ``runtimes/`` (installed as ``edgeseg.runtimes``) with one
:class:`Backend` subclass decorated with :func:`register`; :func:`backend_classes` imports every
module of that package (names with a leading underscore are helpers and are skipped), so adding the
file is all it takes. Importing that module must stay cheap: the vendor library (onnxruntime,
openvino, ...) is imported inside ``__init__`` only, so ``edgeseg doctor`` can list every backend
and why it is unavailable without crashing on any.

Everything format-specific (NHWC outputs, quantization parameters, where metadata lives) is
described by the backend through :class:`TensorSpec` and :attr:`Backend.metadata`; the decoder in
``edgeseg.layout`` never learns which backend ran.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, List, Optional, Sequence, Tuple, Type, TypeVar

import numpy as np

from .errors import BackendUnavailableError, InputError, ModelLoadError

__all__ = [
    "TensorSpec",
    "Backend",
    "BackendStatus",
    "register",
    "backend_classes",
    "backend_status",
    "select_backend",
    "module_available",
    "backend_modules",
]

T = TypeVar("T")

#: the package whose modules define the backends
BACKEND_PACKAGE = "edgeseg.runtimes"


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as the backend sees it.

    ``shape`` uses ``None`` for dynamic dimensions. For quantized tensors ``scale`` and
    ``zero_point`` follow the TFLite convention ``real = (q - zero_point) * scale``.
    """

    name: str
    shape: Tuple[Optional[int], ...]
    dtype: np.dtype
    scale: Optional[float] = None
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        return self.scale is not None and np.issubdtype(self.dtype, np.integer)

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"name": self.name, "shape": list(self.shape), "dtype": np.dtype(self.dtype).name}
        if self.quantized:
            d["quantization"] = {"scale": float(self.scale), "zero_point": int(self.zero_point)}  # type: ignore[arg-type]
        return d


class Backend:
    """Base class of every backend. Subclasses set the class attributes and implement
    ``__init__`` (load), :meth:`run` and, when they hold resources, :meth:`close`.

    After ``__init__`` a backend exposes :attr:`inputs`, :attr:`outputs` (lists of
    :class:`TensorSpec`) and :attr:`metadata` (the format-embedded key/value metadata, values as
    stored, usually strings; parsed by :mod:`edgeseg.metadata`).
    """

    #: short name used by ``backend=`` and the CLI's ``--backend``
    name: ClassVar[str] = ""
    #: model path suffixes this backend opens, in lower case (a folder is matched by its content)
    suffixes: ClassVar[Tuple[str, ...]] = ()
    #: importable module names; the backend is available when any one is importable
    requires: ClassVar[Tuple[str, ...]] = ()
    #: the pip extra that installs the vendor library: ``pip install 'edgeseg[<extra>]'``
    extra: ClassVar[str] = ""
    #: lower runs first when several backends open the same suffix with ``backend="auto"``
    priority: ClassVar[int] = 50
    #: the model format this backend reads, as shown by ``Runtime.info``
    format: ClassVar[str] = ""

    inputs: List[TensorSpec]
    outputs: List[TensorSpec]
    metadata: Dict[str, Any]

    def __init__(self, model: Path, *, threads: Optional[int] = None, **options: Any) -> None:  # pragma: no cover
        raise NotImplementedError

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:  # pragma: no cover
        """Run one inference. ``feeds`` maps input names to arrays matching :attr:`inputs`;
        returns every output by name, raw (still quantized where the model is)."""
        raise NotImplementedError

    #: whether :meth:`run_in_place` works in the vendor's own tensor memory (no copy in or out)
    in_place: ClassVar[bool] = False

    def run_in_place(self, write: Callable[[Dict[str, np.ndarray]], None],
                     read: Callable[[Dict[str, np.ndarray]], T]) -> T:
        """One inference of a fixed-shape model without copying tensors in or out: ``write(inputs)``
        fills the input arrays (by name) where the vendor reads them, ``read(outputs)`` consumes
        the raw outputs, valid only during this call, and what it returns (returned here) must keep
        no reference to them. Vendor errors become :class:`InferenceError`. This base version goes
        through :meth:`run` (with copies); backends with ``in_place`` override it."""
        feeds = {s.name: np.empty(s.shape, s.dtype) for s in self.inputs}
        write(feeds)
        return read(self.run(feeds))

    def close(self) -> None:
        """Release the vendor session. Idempotent."""

    def describe(self) -> Dict[str, Any]:
        """Backend-specific facts for ``Runtime.info`` (providers, delegate, device...)."""
        return {}

    @classmethod
    def handles(cls, path: Path) -> bool:
        """Whether this backend can open ``path`` (by suffix, or by a folder's content)."""
        if path.is_dir():
            return any(p.suffix.lower() in cls.suffixes for p in path.iterdir())
        return path.suffix.lower() in cls.suffixes

    @classmethod
    def installed(cls) -> bool:
        """Whether a vendor module of this backend can be found (without importing it)."""
        return any(module_available(m) for m in cls.requires)

    @classmethod
    def vendor_version(cls) -> str:
        """The vendor module's version, imported in a child process (vendor libraries that cannot
        share a process, e.g. PaddlePaddle after TensorFlow, or one that crashes on import, must
        not take the caller down); raises ImportError with the real reason if none imports."""
        import subprocess
        import sys

        code = "import importlib, sys; m = importlib.import_module(sys.argv[1]); print(getattr(m, '__version__', 'unknown'))"
        reasons = []
        for mod in cls.requires:
            try:
                r = subprocess.run([sys.executable, "-c", code, mod], capture_output=True, text=True, timeout=300)
            except (OSError, subprocess.TimeoutExpired) as exc:
                reasons.append(f"{mod}: {exc}")
                continue
            if r.returncode == 0:
                return (r.stdout.strip().splitlines() or ["unknown"])[-1]
            if r.returncode < 0:
                reasons.append(f"importing {mod} crashed the process (signal {-r.returncode})")
            else:
                err = [line for line in r.stderr.strip().splitlines() if line.strip()]
                reasons.append(err[-1] if err else f"{mod}: exit status {r.returncode}")
        raise ImportError(f"none of {', '.join(cls.requires)} could be imported: {'; '.join(reasons)}")

    @classmethod
    def unavailable(cls) -> BackendUnavailableError:
        return BackendUnavailableError(
            f"backend {cls.name!r} needs {' or '.join(cls.requires)}, which is not installed; "
            f"install it with: pip install 'edgeseg[{cls.extra}]'"
        )


_REGISTRY: Dict[str, Type[Backend]] = {}


def register(cls: Type[Backend]) -> Type[Backend]:
    """Class decorator: add a backend to the registry under ``cls.name``."""
    if not cls.name:
        raise TypeError(f"{cls.__qualname__} must set a name")
    _REGISTRY[cls.name] = cls
    return cls


def backend_modules() -> List[str]:
    """The modules of :data:`BACKEND_PACKAGE` (``runtimes/``), found on disk, not imported;
    private helpers (``_name.py``) excluded."""
    import pkgutil

    pkg = importlib.import_module(BACKEND_PACKAGE)
    return sorted(f"{BACKEND_PACKAGE}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))


def backend_classes() -> Dict[str, Type[Backend]]:
    """All known backends by name. Imports the backend modules (each registers its class),
    never a vendor library; a module that fails to import is a bug and raises."""
    for mod in backend_modules():
        importlib.import_module(mod)
    return dict(sorted(_REGISTRY.items(), key=lambda kv: (kv[1].priority, kv[0])))


@dataclass
class BackendStatus:
    """Availability of one backend, for ``edgeseg doctor`` and error messages."""

    name: str
    format: str
    available: bool
    version: Optional[str] = None
    reason: Optional[str] = None
    extra: str = ""
    suffixes: Tuple[str, ...] = field(default_factory=tuple)


def backend_status(import_vendor: bool = False) -> List[BackendStatus]:
    """Availability of every backend. With ``import_vendor`` the vendor library is imported to
    report its version (and the real import error when it fails); otherwise only
    ``importlib.util.find_spec`` is consulted."""
    out = []
    for name, cls in backend_classes().items():
        found = cls.installed()
        st = BackendStatus(name, cls.format, found, extra=cls.extra, suffixes=cls.suffixes)
        if not found:
            st.reason = f"{' or '.join(cls.requires)} not installed (pip install 'edgeseg[{cls.extra}]')"
        elif import_vendor:
            try:
                st.version = cls.vendor_version()
            except ImportError as exc:
                st.available, st.reason = False, str(exc)
        out.append(st)
    return out


def module_available(module: str) -> bool:
    """Whether ``module`` can be imported, asked of ``importlib.util.find_spec`` (no import)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def select_backend(path: Path, backend: str = "auto") -> Type[Backend]:
    """The backend class for ``path``: the named one, or with ``"auto"`` the first available
    backend (by priority) that opens this kind of file."""
    classes = backend_classes()
    if backend != "auto":
        if backend not in classes:
            raise InputError(f"unknown backend {backend!r}; expected one of: auto, {', '.join(classes)}")
        cls = classes[backend]
        if not cls.handles(path):
            raise ModelLoadError(
                f"backend {backend!r} opens {', '.join(cls.suffixes)} models, but got {path.name!r}"
            )
        if not cls.installed():
            raise cls.unavailable()
        return cls
    candidates = [c for c in classes.values() if c.handles(path)]
    if not candidates:
        known = sorted({s for c in classes.values() for s in c.suffixes})
        found = "a folder without a model file" if path.is_dir() else f"suffix {path.suffix or '(none)'!r}"
        raise ModelLoadError(f"{path}: unsupported model format; expected one of {', '.join(known)}, found {found}")
    for cls in candidates:
        if cls.installed():
            return cls
    if len(candidates) == 1:  # the backend's own message says all it needs (e.g. a GPU too)
        raise candidates[0].unavailable()
    extras = " or ".join(f"pip install 'edgeseg[{c.extra}]'" for c in candidates)
    raise BackendUnavailableError(
        f"{path.name} needs one of the backends {', '.join(c.name for c in candidates)}, none of which is installed; "
        f"install one with: {extras}"
    )


def quantize(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Float array to the quantized dtype of ``spec`` (round half away, saturating)."""
    info = np.iinfo(spec.dtype)
    q = np.rint(x / spec.scale + spec.zero_point)  # type: ignore[operator]
    return np.clip(q, info.min, info.max).astype(spec.dtype)


#: 8-bit arrays at least this large are dequantized through a 256-entry table
_TABLE_MIN = 4096


def dequantize(q: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Quantized array to float32 (``(q - zero_point) * scale``); float arrays pass through as float32.

    Large 8-bit arrays (int8 prototypes: 819k values at 640) are looked up in a table of the 256
    results of that same float32 formula (one pass, bit-identical), others computed in place."""
    if not spec.quantized or not np.issubdtype(q.dtype, np.integer):
        return q if q.dtype == np.float32 else q.astype(np.float32)
    zp, scale = np.float32(spec.zero_point), np.float32(spec.scale)
    if q.dtype.itemsize == 1 and q.size >= _TABLE_MIN:
        import cv2

        codes = np.arange(256, dtype=np.uint8).view(q.dtype)  # every byte, read as the tensor's dtype
        table = (codes.astype(np.float32) - zp) * scale
        raw = np.ascontiguousarray(q).view(np.uint8)  # cv2.LUT indexes by the raw byte
        return cv2.LUT(raw.reshape(-1, raw.shape[-1]), table).reshape(q.shape)
    f = q.astype(np.float32)
    f -= zp
    f *= scale
    return f


def ensure_file(path: Path, kinds: Sequence[str]) -> None:
    """Raise ModelLoadError when ``path`` does not exist or is empty."""
    if not path.exists():
        raise ModelLoadError(f"model not found: {path} (expected a {' / '.join(kinds)} file)")
    if path.is_file() and path.stat().st_size == 0:
        raise ModelLoadError(f"{path}: file is empty (expected a {' / '.join(kinds)} model)")
