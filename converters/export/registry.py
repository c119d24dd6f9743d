"""The exporter registry: the one table of export formats, built from the modules of this package.

Importing this module (and reading :func:`exporters`) never imports torch or a vendor converter:
each format module declares its :class:`Exporter` at import time and imports its heavy packages
inside its export function. ``edgeseg convert --help``, board profiles, ``edgeseg bench`` and the
docs read the table from here; nothing else lists the formats.

Discovery: every module of the ``edgeseg.converters.export`` package whose name does not start with
an underscore (except this one) is a format module and must define ``EXPORTER``; modules named
``_something`` are private helpers and are not imported. See the package docstring for how to write
an exporter.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, Iterator, List, Mapping, Optional, Tuple, Union

from edgeseg.errors import ConversionError, InputError

__all__ = [
    "Option",
    "Exporter",
    "ExportJob",
    "exporters",
    "get_exporter",
    "export_options",
    "option_help",
    "resolve_options",
    "require",
    "PRECISIONS",
    "HALF",
    "DYNAMIC",
    "OPSET",
    "SIMPLIFY",
    "INT8",
    "DATA",
    "CALIB_IMAGES",
    "INT8_IO",
    "VAL_DATA",
]

#: the precisions a board profile may ask for, and the option that selects each (fp32: none)
PRECISIONS: Dict[str, Optional[str]] = {"fp32": None, "fp16": "half", "int8": "int8"}


@dataclass(frozen=True)
class Option:
    """One keyword of :func:`edgeseg.converters.export` and its ``edgeseg convert`` flag.

    ``type`` is ``bool`` (a flag, not given = False), ``int``, ``float``, ``str`` or ``Path``
    (not given = None). Exporters that take the same option share one declaration (the constants
    below); a per-format default goes in :attr:`Exporter.defaults`, not here, so "not given" is
    always False/None and a format that does not take an option can refuse it."""

    name: str
    help: str
    type: type = bool
    metavar: str = ""

    @property
    def flag(self) -> str:
        """The command-line flag: ``calib_images`` -> ``--calib-images``."""
        return "--" + self.name.replace("_", "-")

    @property
    def unset(self) -> Any:
        return False if self.type is bool else None

    def given(self, value: Any) -> bool:
        return value is not None and value is not False


HALF = Option("half", "fp16 weights (input and outputs stay float32 except in TorchScript)")
DYNAMIC = Option("dynamic", "dynamic batch, height and width")
OPSET = Option("opset", "ONNX opset (default 17; 18+ uses torch's dynamo exporter)", int, "N")
SIMPLIFY = Option("simplify", "simplify the ONNX graph with onnxslim")
INT8 = Option("int8", "int8 quantization")  # what it means per format: each exporter's notes["int8"]
DATA = Option("data", "calibration images: a YOLO dataset .yaml or an image folder", Path, "DATASET")
CALIB_IMAGES = Option("calib_images", "number of calibration images (default: the format's)", int, "N")
INT8_IO = Option("int8_io", "int8 with integer input and outputs (scale and zero point in the model)")
VAL_DATA = Option("val_data", "dataset .yaml for the float-vs-int8 accuracy report (default: --data's val split)",
                  Path, "DATASET")


@dataclass
class ExportJob:
    """What an export function gets. It writes the artifact at :attr:`path` and nothing else
    (the caller renames ``path`` onto :attr:`target` after it returns, or removes it on error).

    ``net`` is a private copy of the checkpoint's module: float32, eval mode, BatchNorm fused,
    gradients off, already run once on ``im`` (so shapes are valid). ``im`` is
    ``torch.zeros(1, 3, H, W)`` float32. The export function runs under ``torch.no_grad()`` with
    tracer warnings silenced.
    """

    loaded: Any  #: :class:`edgeseg.converters.checkpoint.LoadedModel` (names, stride, source, sha256)
    net: Any  #: the prepared torch module (see above)
    im: Any  #: example input, ``(1, 3, H, W)`` float32
    imgsz: Tuple[int, int]  #: (H, W) in pixels, multiples of the stride
    options: Dict[str, Any]  #: every option of this exporter: the value given, else its default
    meta: Dict[str, Any]  #: metadata to embed (plain Python values); an exporter may add keys
    path: Path  #: where to write: a temp file beside the target, or an empty temp folder
    name: str  #: the artifact's stem (``yolov8n-seg``); files inside a folder are named after it
    target: Path  #: the final path, for messages only
    stage: Callable[[str], ContextManager[None]]  #: ``with job.stage("trace"): ...``

    def write_sidecar(self, folder: Path, meta: Optional[Mapping[str, Any]] = None) -> None:
        """``metadata.yaml`` in ``folder`` (Ultralytics' place for folder formats): ``meta`` or :attr:`meta`."""
        import yaml

        text = yaml.safe_dump(dict(self.meta if meta is None else meta), sort_keys=False, allow_unicode=True)
        (Path(folder) / "metadata.yaml").write_text(text, encoding="utf-8")


@dataclass(frozen=True)
class Exporter:
    """The declaration of one export format (a module's ``EXPORTER``)."""

    name: str  #: the ``--to`` value, lower case
    title: str  #: the format's name in messages ("OpenVINO")
    suffix: str  #: artifact suffix: ``.onnx`` (file) or ``_openvino_model`` (folder)
    description: str  #: one line for ``edgeseg convert --help``
    export: Callable[[ExportJob], None]  #: writes the artifact at ``job.path``
    contents: str = ""  #: what the artifact holds, for the help table ("<name>.xml, .bin, metadata.yaml")
    folder: bool = False  #: the artifact is a folder
    #: glob patterns of the entries an export folder holds; an existing folder with anything
    #: else in it is never replaced
    folder_files: Tuple[str, ...] = ()
    options: Tuple[Option, ...] = ()  #: the options it takes besides imgsz/out/progress
    defaults: Mapping[str, Any] = field(default_factory=dict)  #: option values when not given
    requires: Tuple[str, ...] = ()  #: importable modules the export needs (checked before any work)
    extra: str = "convert"  #: pip extra that installs them
    #: the install line shown when a required module is missing, when ``pip install 'edgeseg[<extra>]'``
    #: alone is not enough (packages whose pins need ``--no-deps``); default: that line
    install: str = ""
    backend: str = ""  #: the edgeseg backend that runs the artifact
    bench: bool = True  #: ``edgeseg bench --convert`` makes this format for :attr:`backend`
    #: precisions it makes; default: fp32, plus fp16 when it takes ``half``, int8 with ``int8``
    precisions: Tuple[str, ...] = ()
    #: progress-bar stages of :attr:`export` (an int, or a function of the resolved options)
    stages: Union[int, Callable[[Mapping[str, Any]], int]] = 1
    #: extra validation of the resolved options (raise InputError / ConversionError)
    check: Optional[Callable[[Dict[str, Any]], None]] = None
    order: int = 50  #: position in lists (lower first)
    #: what a shared option means for this format, for ``--help`` (``{"int8": "8-bit weights only"}``);
    #: :func:`option_help` joins the notes of every format that takes the option
    notes: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or self.name != self.name.lower():
            raise TypeError(f"exporter name must be a non-empty lower-case string, got {self.name!r}")
        if not self.precisions:
            names = {o.name for o in self.options}
            derived = ["fp32"] + [p for p, opt in PRECISIONS.items() if opt is not None and opt in names]
            object.__setattr__(self, "precisions", tuple(derived))
        for what, keys in (("defaults", self.defaults), ("notes", self.notes)):
            unknown = set(keys) - {o.name for o in self.options}
            if unknown:
                raise TypeError(f"exporter {self.name!r}: {what} for options it does not take: {sorted(unknown)}")

    @property
    def option_names(self) -> Tuple[str, ...]:
        return tuple(o.name for o in self.options)

    def stage_count(self, options: Mapping[str, Any]) -> int:
        return int(self.stages(options) if callable(self.stages) else self.stages)

    def artifact(self, stem: str) -> str:
        """The artifact's file or folder name for a model called ``stem``."""
        return stem + self.suffix


_TABLE: Dict[str, Exporter] = {}


def _format_modules() -> List[str]:
    pkg = importlib.import_module(__package__)
    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__)
                  if not m.name.startswith("_") and m.name != "registry")


def exporters() -> Dict[str, Exporter]:
    """Every export format by name, in display order. Imports the format modules (cheap: no
    torch), once."""
    if not _TABLE:
        found: Dict[str, Exporter] = {}
        for mod_name in _format_modules():
            mod = importlib.import_module(f"{__package__}.{mod_name}")
            exp = getattr(mod, "EXPORTER", None)
            if not isinstance(exp, Exporter):
                raise TypeError(f"{mod.__name__} is a format module (no leading underscore) but defines no "
                                f"EXPORTER = Exporter(...); rename it _{mod_name}.py if it is a helper")
            if exp.name in found:
                raise TypeError(f"export format {exp.name!r} is declared twice ({mod.__name__})")
            found[exp.name] = exp
        _check_shared_options(found)
        _TABLE.update(sorted(found.items(), key=lambda kv: (kv[1].order, kv[0])))
    return dict(_TABLE)


def _check_shared_options(found: Mapping[str, Exporter]) -> None:
    seen: Dict[str, Option] = {}
    for exp in found.values():
        for opt in exp.options:
            if opt.name in seen and seen[opt.name] != opt:
                raise TypeError(f"option {opt.name!r} is declared differently by two exporters ({exp.name}): "
                                "share one Option declaration")
            seen[opt.name] = opt


def get_exporter(name: str) -> Exporter:
    """The exporter for ``--to name``; InputError listing the formats for an unknown one."""
    table = exporters()
    key = str(name).lower()
    if key not in table:
        raise InputError(f"unknown export format {name!r}; expected one of {', '.join(table)}")
    return table[key]


def export_options() -> Dict[str, Tuple[Option, Tuple[str, ...]]]:
    """Every option some format takes: name -> (declaration, the formats that take it)."""
    out: Dict[str, Tuple[Option, Tuple[str, ...]]] = {}
    for exp in exporters().values():
        for opt in exp.options:
            decl, names = out.get(opt.name, (opt, ()))
            out[opt.name] = (decl, names + (exp.name,))
    return out


def option_help(name: str) -> str:
    """The ``--help`` text of option ``name``: its declaration's help, then what it means for each
    format that takes it (formats with the same note grouped; formats without one listed as is):
    ``int8 quantization (onnx, openvino: static, calibrated on --data; coreml: 8-bit weights only).``"""
    decl, takers = export_options()[name]
    table = exporters()
    groups: Dict[str, List[str]] = {}
    for fmt in takers:
        groups.setdefault(table[fmt].notes.get(name, ""), []).append(fmt)
    if list(groups) == [""]:
        return f"{decl.help} (formats: {', '.join(takers)})."
    parts = [f"{', '.join(fmts)}: {note}" if note else ", ".join(fmts) for note, fmts in groups.items()]
    return f"{decl.help} ({'; '.join(parts)})."


def resolve_options(exporter: Exporter, given: Mapping[str, Any]) -> Dict[str, Any]:
    """Validate the options given for ``exporter`` and fill in its defaults.

    Raises InputError for an option no format takes, or one this format does not take that was
    given (set to anything but False/None); then runs the exporter's :attr:`Exporter.check`."""
    known = export_options()
    for key, value in given.items():
        if key not in known:
            raise InputError(f"unknown export option {key!r}; expected one of {', '.join(sorted(known))}")
        decl, takers = known[key]
        if decl.given(value) and key not in exporter.option_names:
            titles = ", ".join(exporters()[n].title for n in takers)
            raise InputError(f"{key} applies to {titles} exports only, got {key}={value!r} with to={exporter.name!r}")
    out: Dict[str, Any] = {}
    for opt in exporter.options:
        value = given.get(opt.name)
        out[opt.name] = value if opt.given(value) else exporter.defaults.get(opt.name, opt.unset)
    if exporter.check is not None:
        exporter.check(out)
    return out


def require(module: str, what: str, extra: str = "convert", install: str = "") -> None:
    """Raise ConversionError naming the pip extra (or the ``install`` line) when ``module`` cannot be
    imported (asked of :func:`edgeseg.backend.module_available`, nothing is imported)."""
    from edgeseg.backend import module_available

    if not module_available(module):
        line = install or f"pip install 'edgeseg[{extra}]'"
        raise ConversionError(f"{what} needs the Python package {module.split('.')[0]!r}, which is not installed; "
                              f"install it with: {line}")


@contextlib.contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    """Logger ``name`` (a vendor's: "coremltools", "tensorflow", "torch.onnx") held at ERROR inside
    the block: chatter that holds for every model is held back, its errors still show."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
