"""A restricted unpickler for Ultralytics ``.pt`` checkpoints (no Ultralytics needed, no code run).

Ultralytics checkpoints are pickles of Ultralytics (and torch.nn) module objects. Here every
global the pickle names is replaced by an inert :class:`Placeholder` class, except a short
allow-list: torch's tensor/parameter rebuild functions, storages (handled by ``torch.load``) and
plain containers. A placeholder only records the arguments and state the pickle gives it, so
loading a hostile file can at worst build a tree of placeholders — it never imports or calls
anything the file names.
"""
from __future__ import annotations

import collections
import pickle
from types import SimpleNamespace
from typing import Any, Dict, Tuple, Type

import torch
import torch._utils

__all__ = ["Placeholder", "pickle_module", "module_tree_state_dict"]


class Placeholder:
    """Inert stand-in for a class or function named by the pickle (``_module``.``_name``)."""

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
    key = (module, name)
    if key not in _PLACEHOLDERS:
        _PLACEHOLDERS[key] = type(name, (Placeholder,), {"_module": module, "_name": name})
    return _PLACEHOLDERS[key]


_ALLOWED: Dict[Tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("collections", "OrderedDict"): collections.OrderedDict,
}
for _mod in ("builtins", "__builtin__"):
    for _t in (set, frozenset, dict, list, tuple):
        _ALLOWED[(_mod, _t.__name__)] = _t


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose ``find_class`` returns allow-listed objects or inert placeholders."""

    def find_class(self, module: str, name: str) -> Any:
        return _ALLOWED.get((module, name)) or _placeholder(module, name)


def _load(file: Any, **kwargs: Any) -> Any:
    return RestrictedUnpickler(file, **kwargs).load()


#: pass as ``torch.load(..., pickle_module=pickle_module, weights_only=False)``
pickle_module = SimpleNamespace(Unpickler=RestrictedUnpickler, load=_load, __name__="edgeseg_restricted_pickle")


def module_tree_state_dict(obj: Placeholder) -> Dict[str, torch.Tensor]:
    """The ``state_dict`` of a placeholder tree of pickled ``nn.Module`` objects: parameters and
    persistent buffers under dotted names (``model.0.conv.weight``)."""
    out: Dict[str, torch.Tensor] = {}

    def walk(node: Any, prefix: str) -> None:
        st = node.state if isinstance(node, Placeholder) else None
        if not isinstance(st, dict):
            return
        skip = st.get("_non_persistent_buffers_set")
        skip = skip if isinstance(skip, (set, frozenset)) else set()
        for group in ("_parameters", "_buffers"):
            for k, v in (st.get(group) or {}).items():
                if isinstance(v, torch.Tensor) and k not in skip:
                    out[prefix + k] = v
        for k, child in (st.get("_modules") or {}).items():
            if child is not None:
                walk(child, f"{prefix}{k}.")

    walk(obj, "")
    return out
