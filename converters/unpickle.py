"""Read ``torch.save`` zip archives without ``torch.load``: nothing from the file is executed.

A ``torch.save`` file is a zip holding one folder: ``data.pkl`` (the pickled object), ``data/<key>``
(one raw record per tensor storage), and small metadata records (``byteorder``, ``version``,
``.format_version``, ``.storage_alignment``, ``.data/...``). This module reads exactly that, and
nothing else reaches torch or Python's full unpickler:

1. **Layout first.** The zip's central directory is checked before any record is read: one
   folder, only the records above (a TorchScript archive, recognized by ``constants.pkl`` or
   ``code/``, and every other layout is refused), known compression, declared sizes within
   :data:`LIMITS` and plausible for the compressed size (no zip bomb is inflated).
2. **Pickle pre-scan.** ``data.pkl`` is walked with :mod:`pickletools` (which never allocates
   more than the bytes present): memo indices must be below the number of opcodes, every
   length-prefixed string must fit in the file, and only a short list of opcodes is accepted.
3. **Inert unpickling.** Every global the pickle names becomes an inert :class:`Placeholder`
   class, except plain containers (``dict``, ``list``, ``set``, ``tuple``, ``OrderedDict``: their
   copies are counted against a budget) and torch's tensor rebuild functions, which here return
   a :class:`TensorRef` (dtype, shape, stride, offset, storage key) and read no bytes.
4. **Tensors on demand.** :meth:`TensorRef.materialize` checks the view against the storage's
   declared element count and that against the record's size, then reads that record only.

Errors are :class:`edgeseg.errors.ModelLoadError` naming the file and what was found.
"""
from __future__ import annotations

import collections
import io
import pickle
import pickletools
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Type

from edgeseg.errors import ModelLoadError

__all__ = ["Placeholder", "TensorRef", "TorchArchive", "read_checkpoint", "module_tree_state_dict", "LIMITS"]


@dataclass
class Limits:
    """Bounds applied to every file (a real YOLO checkpoint is far below each)."""

    pickle_bytes: int = 256 << 20  #: size of ``data.pkl``
    storage_bytes: int = 1 << 30  #: one tensor storage
    total_bytes: int = 4 << 30  #: all records together, as declared in the zip directory
    records: int = 100_000  #: zip entries
    deflate_ratio: int = 1100  #: declared size / compressed size (deflate cannot exceed ~1032)
    copied_items: int = 0  #: container items copied while unpickling; 0 = 4 x the pickle's size
    tensor_dims: int = 8
    module_depth: int = 64  #: nesting of ``_modules`` in a pickled model
    modules: int = 100_000  #: module paths walked in a pickled model


LIMITS = Limits()

#: torch.save's metadata records (besides data.pkl and data/<key>)
_META_RECORDS = {"byteorder", "version", ".format_version", ".storage_alignment"}
_TORCHSCRIPT_MARKS = ("constants.pkl", "code/", "attributes.pkl", "extra/")

_STORAGE_DTYPES = {
    "FloatStorage": "float32", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
    "DoubleStorage": "float64", "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16",
    "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
}
_ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int64": 8, "int32": 4, "int16": 2,
             "int8": 1, "uint8": 1, "bool": 1}

# opcodes a torch.save / Ultralytics pickle uses (protocols 2-4); anything else is refused
_OPCODES = {
    "PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP", "NONE", "NEWTRUE", "NEWFALSE",
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
    "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8",
    "BINBYTES", "SHORT_BINBYTES", "BINBYTES8",
    "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_LIST", "APPEND", "APPENDS", "LIST",
    "EMPTY_DICT", "DICT", "SETITEM", "SETITEMS", "EMPTY_SET", "ADDITEMS", "FROZENSET",
    "GET", "BINGET", "LONG_BINGET", "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE",
    "GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "NEWOBJ", "NEWOBJ_EX", "BINPERSID", "PERSID",
}
_LENGTH_PREFIXED = {"BINSTRING", "SHORT_BINSTRING", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8",
                    "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "LONG4"}


class Placeholder:
    """Inert stand-in for a class or function named by the pickle (``_module``.``_name``).

    It records the arguments and the state the pickle gives it; it has no other behaviour."""

    _module: str = ""
    _name: str = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    @classmethod
    def qualname(cls) -> str:
        return f"{cls._module}.{cls._name}"

    def __repr__(self) -> str:
        return f"<placeholder {self.qualname()}>"


_PLACEHOLDERS: Dict[Tuple[str, str], Type[Placeholder]] = {}


def _placeholder(module: str, name: str) -> Type[Placeholder]:
    key = (module[:200], name[:200])
    if key not in _PLACEHOLDERS:
        _PLACEHOLDERS[key] = type("Placeholder", (Placeholder,), {"_module": key[0], "_name": key[1]})
    return _PLACEHOLDERS[key]


class _StorageType:
    """What ``torch.FloatStorage`` & co. unpickle to: the element dtype's name."""

    def __init__(self, dtype: str) -> None:
        self.dtype = dtype

    def __setstate__(self, state: Any) -> None:  # BUILD on it changes nothing
        pass


@dataclass
class _StorageRef:
    archive: "TorchArchive"
    key: str
    dtype: str
    numel: int

    def __setstate__(self, state: Any) -> None:
        pass


class TensorRef:
    """A tensor described by the pickle, not yet read: ``dtype`` (torch dtype name), ``shape``,
    ``stride``, ``offset`` (in elements) into the storage record ``storage.key``."""

    def __init__(self, storage: Any, offset: Any, shape: Any, stride: Any) -> None:
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride

    def __setstate__(self, state: Any) -> None:  # BUILD on a rebuilt tensor changes nothing
        pass

    @property
    def dtype(self) -> str:
        return self.storage.dtype if isinstance(self.storage, _StorageRef) else "?"

    def _check(self) -> Tuple[_StorageRef, int, Tuple[int, ...], Tuple[int, ...]]:
        st = self.storage
        if not isinstance(st, _StorageRef):
            raise ModelLoadError(f"a tensor in the checkpoint has no storage record (found {type(st).__name__})")
        where = f"{st.archive.path}: tensor in record data/{st.key}"
        shape, stride, offset = self.shape, self.stride, self.offset
        if not (_int_seq(shape) and _int_seq(stride) and len(shape) == len(stride) <= LIMITS.tensor_dims
                and _is_int(offset) and offset >= 0 and all(v >= 0 for v in shape) and all(v >= 0 for v in stride)):
            raise ModelLoadError(f"{where}: invalid view (shape {shape!r}, stride {stride!r}, offset {offset!r})")
        shape, stride = tuple(int(v) for v in shape), tuple(int(v) for v in stride)
        if all(shape):
            last = offset + sum((n - 1) * s for n, s in zip(shape, stride))
            if last >= st.numel:
                raise ModelLoadError(
                    f"{where}: view of shape {shape} reaches element {last}, but the storage holds {st.numel}"
                )
        return st, int(offset), shape, stride

    def materialize(self) -> Any:
        """The tensor (a torch.Tensor viewing the record's bytes). Reads one storage record."""
        import torch

        st, offset, shape, stride = self._check()
        flat = st.archive.storage(st)
        return torch.as_strided(flat, shape, stride, offset)

    def __repr__(self) -> str:
        return f"<tensor {self.dtype} {tuple(self.shape) if _int_seq(self.shape) else self.shape}>"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int_seq(v: Any) -> bool:
    return isinstance(v, (tuple, list)) and all(_is_int(x) for x in v)


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, *_rest: Any) -> TensorRef:
    return TensorRef(storage, offset, size, stride)


def _rebuild_parameter(data: Any, *_rest: Any) -> Any:
    return data


class _Budget:
    """Counts the items that allowed constructors copy (``tuple(big_list)`` repeated is a bomb)."""

    def __init__(self, limit: int) -> None:
        self.left = limit

    def wrap(self, ctor: Any) -> Any:
        def build(*args: Any) -> Any:
            if len(args) > 1:
                raise pickle.UnpicklingError(f"{ctor.__name__} called with {len(args)} arguments")
            if args:
                src = args[0]
                if not isinstance(src, (list, tuple, dict, set, frozenset)):
                    raise pickle.UnpicklingError(f"{ctor.__name__} of a {type(src).__name__}")
                self.left -= len(src)
                if self.left < 0:
                    raise pickle.UnpicklingError("the pickle copies more container items than it holds")
            return ctor(*args)

        build.__name__ = ctor.__name__
        return build


class _Unpickler(pickle.Unpickler):
    """Resolves globals to inert objects and storages to :class:`_StorageRef`."""

    def __init__(self, data: bytes, archive: "TorchArchive") -> None:
        super().__init__(io.BytesIO(data))
        self._archive = archive
        budget = _Budget(LIMITS.copied_items or 4 * len(data) + 1024)
        self._allowed: Dict[Tuple[str, str], Any] = {
            ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
            ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
            ("collections", "OrderedDict"): budget.wrap(collections.OrderedDict),
        }
        for mod in ("builtins", "__builtin__"):
            for t in (set, frozenset, dict, list, tuple):
                self._allowed[(mod, t.__name__)] = budget.wrap(t)

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        return self._allowed.get((module, name)) or _placeholder(module, name)

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {str(pid)[:80]}")
        _, stype, key, _location, numel = pid
        if not isinstance(stype, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {str(stype)[:80]}")
        if not isinstance(key, str) or not _is_int(numel) or numel < 0:
            raise pickle.UnpicklingError(f"malformed storage reference {str(pid)[:120]}")
        self._archive.check_storage(key, stype.dtype, numel)
        return _StorageRef(self._archive, key, stype.dtype, numel)


class TorchArchive:
    """An opened ``torch.save`` zip whose layout has been checked (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cache: Dict[str, Any] = {}
        try:
            self._zip = zipfile.ZipFile(path)
            infos = self._zip.infolist()
        except Exception as exc:  # BadZipFile, struct.error, ValueError, OverflowError...
            raise ModelLoadError(f"{path}: not a readable zip archive ({type(exc).__name__}: {exc})") from exc
        self.prefix, self._records = self._check_layout(infos)

    def _check_layout(self, infos: List[zipfile.ZipInfo]) -> Tuple[str, Dict[str, zipfile.ZipInfo]]:
        path = self.path
        if not infos:
            raise ModelLoadError(f"{path}: empty zip archive (expected a torch.save checkpoint)")
        if len(infos) > LIMITS.records:
            raise ModelLoadError(f"{path}: {len(infos)} zip entries (a checkpoint has at most {LIMITS.records})")
        names = [i.filename for i in infos]
        prefixes = {n.split("/", 1)[0] for n in names}
        if len(prefixes) != 1 or any("/" not in n for n in names):
            raise ModelLoadError(
                f"{path}: not a torch.save checkpoint (expected one folder holding data.pkl, found "
                f"{_few(sorted(prefixes))})"
            )
        prefix = prefixes.pop()
        records = {n.split("/", 1)[1]: i for n, i in zip(names, infos)}
        marks = [r for r in records if r.startswith(_TORCHSCRIPT_MARKS) or r.endswith("constants.pkl")]
        if marks:
            raise ModelLoadError(
                f"{path}: a TorchScript archive (torch.jit.save; holds {_few(sorted(marks))}), not a checkpoint. "
                "edgeseg never loads TorchScript, which can run code on load; give the Ultralytics .pt "
                "or an edgeseg checkpoint instead"
            )
        if "data.pkl" not in records:
            raise ModelLoadError(f"{path}: zip archive without data.pkl (found {_few(sorted(records))})")
        other = [r for r in records if r != "data.pkl" and r not in _META_RECORDS
                 and not r.startswith(("data/", ".data/"))]
        if other:
            raise ModelLoadError(
                f"{path}: not a torch.save checkpoint: unexpected records {_few(sorted(other))} beside data.pkl"
            )
        total = 0
        for rec, info in records.items():
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise ModelLoadError(f"{path}: record {rec} uses zip compression method {info.compress_type} "
                                     "(torch.save stores records uncompressed)")
            if info.flag_bits & 0x1:
                raise ModelLoadError(f"{path}: record {rec} is encrypted")
            size, packed = info.file_size, info.compress_size
            if info.compress_type == zipfile.ZIP_STORED and size != packed:
                raise ModelLoadError(f"{path}: record {rec}: stored entry with size {size} != {packed}")
            if size > LIMITS.deflate_ratio * max(packed, 1):
                raise ModelLoadError(
                    f"{path}: record {rec} declares {size} bytes from {packed} compressed bytes "
                    "(a decompression bomb or a corrupt zip directory)"
                )
            limit = (LIMITS.pickle_bytes if rec == "data.pkl" else LIMITS.storage_bytes if rec.startswith("data/")
                     else 4096)
            if size > limit:
                raise ModelLoadError(f"{path}: record {rec} declares {size} bytes (at most {limit} accepted)")
            total += size
        if total > LIMITS.total_bytes:
            raise ModelLoadError(f"{path}: records declare {total} bytes in all (at most {LIMITS.total_bytes})")
        return prefix, records

    def _read(self, rec: str, size: Optional[int] = None) -> bytes:
        info = self._records[rec]
        want = info.file_size if size is None else size
        try:
            with self._zip.open(info) as f:
                data = f.read(want)
        except Exception as exc:  # BadZipFile (CRC), zlib.error, EOFError...
            raise ModelLoadError(f"{self.path}: record {rec} is corrupt ({type(exc).__name__}: {exc})") from exc
        if len(data) != want:
            raise ModelLoadError(f"{self.path}: record {rec} is truncated ({len(data)} of {want} bytes)")
        return data

    def load(self) -> Any:
        """The unpickled object (placeholders, containers, :class:`TensorRef`)."""
        order = self._records.get("byteorder")
        if order is not None and self._read("byteorder").strip() not in (b"little",):
            raise ModelLoadError(f"{self.path}: big-endian checkpoint (byteorder record); edgeseg reads little-endian")
        data = self._read("data.pkl")
        prescan_pickle(data, f"{self.path}: data.pkl")
        try:
            return _Unpickler(data, self).load()
        except ModelLoadError:
            raise
        except Exception as exc:  # UnpicklingError, EOFError, TypeError from a malformed REDUCE...
            raise ModelLoadError(f"{self.path}: data.pkl is not a readable pickle ({type(exc).__name__}: "
                                 f"{str(exc)[:200]})") from exc

    def check_storage(self, key: str, dtype: str, numel: int) -> None:
        rec = f"data/{key}"
        info = self._records.get(rec)
        if info is None:
            raise ModelLoadError(f"{self.path}: the pickle names storage {key!r}, but the archive has no record {rec}")
        need = numel * _ITEMSIZE[dtype]
        if need > info.file_size:
            raise ModelLoadError(
                f"{self.path}: storage {key} declares {numel} {dtype} elements ({need} bytes), "
                f"but its record holds {info.file_size} bytes"
            )

    def storage(self, ref: _StorageRef) -> Any:
        """The storage as a flat torch tensor of ``ref.numel`` elements (read once, then cached)."""
        import torch

        flat = self._cache.get(ref.key)
        if flat is None or flat.numel() < ref.numel or str(flat.dtype) != f"torch.{ref.dtype}":
            self.check_storage(ref.key, ref.dtype, ref.numel)
            nbytes = ref.numel * _ITEMSIZE[ref.dtype]
            dtype = getattr(torch, ref.dtype)
            if nbytes == 0:
                flat = torch.empty(0, dtype=dtype)
            else:
                flat = torch.frombuffer(bytearray(self._read(f"data/{ref.key}", nbytes)), dtype=dtype)
            self._cache[ref.key] = flat
        return flat[: ref.numel]

    def close(self) -> None:
        self._cache.clear()
        self._zip.close()


def prescan_pickle(data: bytes, what: str) -> None:
    """Walk the opcodes of ``data`` without building anything; raise :class:`ModelLoadError` for
    an opcode outside the list torch.save uses, a memo index that is not below the number of
    opcodes (CPython's unpickler would size its memo by it), or a length beyond the data."""
    limit = len(data)  # a pickle has fewer opcodes than bytes
    ops = 0
    try:
        for op, arg, pos in pickletools.genops(io.BytesIO(data)):
            ops += 1
            name = op.name
            if name not in _OPCODES:
                raise ModelLoadError(f"{what}: opcode {name} at byte {pos} is not used by torch.save checkpoints")
            if name in ("PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"):
                idx = int(arg)
                if not 0 <= idx < limit:
                    raise ModelLoadError(f"{what}: memo index {idx} at byte {pos} exceeds what the pickle can hold")
            elif name == "FRAME" and int(arg) > len(data) - pos:
                raise ModelLoadError(f"{what}: frame of {arg} bytes at byte {pos} is longer than the pickle")
            elif name in ("INT", "LONG") and isinstance(arg, int) and arg.bit_length() > 4096:
                raise ModelLoadError(f"{what}: integer of {arg.bit_length()} bits at byte {pos}")
            if name == "STOP":
                break
    except ModelLoadError:
        raise
    except Exception as exc:  # ValueError("expected N bytes ... only M remain"), bad opcode...
        raise ModelLoadError(f"{what}: malformed pickle ({type(exc).__name__}: {str(exc)[:200]})") from exc
    if ops == 0:
        raise ModelLoadError(f"{what}: empty pickle")


def read_checkpoint(path: Path) -> Tuple[Any, TorchArchive]:
    """Open and unpickle a ``torch.save`` zip; returns ``(object, archive)`` (tensors are
    :class:`TensorRef`, read from ``archive`` on :meth:`TensorRef.materialize`)."""
    archive = TorchArchive(path)
    try:
        return archive.load(), archive
    except BaseException:
        archive.close()
        raise


def module_tree_state_dict(obj: Placeholder, what: str = "checkpoint") -> Dict[str, TensorRef]:
    """The ``state_dict`` of a placeholder tree of pickled ``nn.Module`` objects: parameters and
    persistent buffers (as :class:`TensorRef`) under dotted names (``model.0.conv.weight``).

    A module that contains itself (a cycle), a tree deeper than :data:`LIMITS` ``.module_depth``
    or one that takes more than ``LIMITS.modules`` visits (a DAG of shared submodules whose path
    count explodes) raises :class:`ModelLoadError`. Shared submodules (Ultralytics shares one
    activation module) are walked under each name, as ``nn.Module.state_dict`` does."""
    out: Dict[str, TensorRef] = {}
    visits = 0
    stack: List[Tuple[Any, str, Tuple[int, ...]]] = [(obj, "", ())]
    while stack:
        node, prefix, ancestors = stack.pop()
        st = node.state if isinstance(node, Placeholder) else None
        if not isinstance(st, dict):
            continue
        name = prefix.rstrip(".") or "(root)"
        if id(node) in ancestors:
            raise ModelLoadError(f"{what}: module {name} contains itself (a cycle in the pickled module tree)")
        visits += 1
        if len(ancestors) > LIMITS.module_depth:
            raise ModelLoadError(f"{what}: the pickled module tree is deeper than {LIMITS.module_depth} levels")
        if visits > LIMITS.modules:
            raise ModelLoadError(f"{what}: the pickled module tree has more than {LIMITS.modules} module paths "
                                 "(submodules shared over and over)")
        path = ancestors + (id(node),)
        skip = st.get("_non_persistent_buffers_set")
        skip = skip if isinstance(skip, (set, frozenset)) else set()
        for group in ("_parameters", "_buffers"):
            members = st.get(group)
            if not isinstance(members, dict):
                continue
            for k, v in members.items():
                if isinstance(v, TensorRef) and isinstance(k, str) and k not in skip:
                    out[prefix + k] = v
        children = st.get("_modules")
        if isinstance(children, dict):
            for k, child in reversed(list(children.items())):
                if child is not None and isinstance(k, str):
                    stack.append((child, f"{prefix}{k}.", path))
    return out


def _few(items: List[str], n: int = 4) -> str:
    shown = ", ".join(repr(s[:60]) for s in items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "") if items else "nothing"

