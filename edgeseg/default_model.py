"""The embedded default model: a small YOLOv8-seg trained on edgeseg's synthetic shapes.

It ships inside the package (``edgeseg/assets/``) as ONNX and as int8 TFLite, so ``Runtime()``,
``edgeseg predict`` and ``edgeseg run`` work on a fresh install without any download. It knows the
six synthetic classes (circle, rectangle, triangle, star, ellipse, hexagon), not real objects: for
those, bring a model (a ``.pt`` you trained or downloaded, through ``edgeseg convert``). How it was
made: ``scripts/train_default_model.sh`` (data, architecture, the exact train and convert commands).
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import List, Optional

from .errors import BackendUnavailableError, InputError, ModelLoadError

log = logging.getLogger("edgeseg")

ASSETS = Path(__file__).resolve().parent / "assets"
#: the packaged files, in the order ``backend="auto"`` tries them
FILES = ("edgeseg-default-320.onnx", "edgeseg-default-320-int8.tflite")
CLASSES = ("circle", "rectangle", "triangle", "star", "ellipse", "hexagon")

_said = threading.Event()


def default_model_files() -> List[Path]:
    """The packaged default-model files that exist, in preference order."""
    return [ASSETS / f for f in FILES if (ASSETS / f).is_file()]


def default_model(backend: str = "auto") -> Path:
    """Path of the embedded model file that ``backend`` (or, with ``"auto"``, an installed backend) opens.

    Raises :class:`ModelLoadError` when the package carries no default model and
    :class:`BackendUnavailableError` (naming the pip extras) when no installed backend opens one."""
    from .backend import backend_classes  # the registry; imported here so `import edgeseg` stays light

    files = default_model_files()
    if not files:
        raise ModelLoadError(f"this edgeseg installation has no embedded default model (expected {FILES[0]} in "
                             f"{ASSETS}); pass a model file")
    classes = backend_classes()
    if backend != "auto" and backend not in classes:
        raise InputError(f"unknown backend {backend!r}; expected one of: auto, {', '.join(classes)}")
    wanted = [classes[backend]] if backend != "auto" else list(classes.values())
    extras: List[str] = []
    for path in files:
        for cls in wanted:
            if not cls.handles(path):
                continue
            if cls.installed():
                return path
            extras.append(cls.extra)
    if not extras:
        raise ModelLoadError(f"backend {backend!r} opens none of the embedded default model's formats "
                             f"({', '.join(p.suffix for p in files)})")
    pip = " or ".join(f"pip install 'edgeseg[{e}]'" for e in dict.fromkeys(extras))
    raise BackendUnavailableError(f"the embedded default model needs a backend that is not installed: {pip}")


def announce(path: Path) -> None:
    """Say once per process that the embedded model is in use and what it knows."""
    if not _said.is_set():
        _said.set()
        log.warning("no model given: using edgeseg's embedded default model %s (synthetic shapes: %s), "
                    "not real objects; pass a model for those", path.name, ", ".join(CLASSES))


def resolve(model: Optional[object], backend: str = "auto") -> object:
    """``model`` itself, or the embedded default model (announced once) when it is None."""
    if model is not None:
        return model
    path = default_model(backend)
    announce(path)
    return path
