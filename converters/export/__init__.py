"""``export()``: a checkpoint to any registered format, with metadata, atomically.

    >>> from edgeseg.converters import export
    >>> export("yolov8n-seg.pt", to="onnx", imgsz=320)          # yolov8n-seg.onnx beside the .pt
    >>> export("yolov8n-seg.pt", to="openvino", half=True)      # yolov8n-seg_openvino_model/

Every artifact keeps the raw output layout of the torch model (``output0`` ``(1, 4+nc+nm, N)``,
``output1`` protos ``(1, nm, H/4, W/4)``; input ``images`` ``(1, 3, H, W)`` RGB 0-1) unless its
format says otherwise, and carries this metadata (Ultralytics keys plus edgeseg's): description,
author, date, version, license, stride, task, batch, imgsz, names, args, channels,
edgeseg_version, output_layout, quantization, source_sha256, dynamic. A failed export leaves
nothing behind and raises :class:`~edgeseg.errors.ConversionError` naming the stage that failed.

Writing an exporter (a new format is one new file here, plus its test)
-----------------------------------------------------------------------
Add ``converters/export/<format>.py``. The registry (:mod:`.registry`) imports every module of this
package whose name has no leading underscore and reads its ``EXPORTER``; ``edgeseg convert --to``,
its ``--help`` table and flags, board profiles (which formats and precisions ``convert`` can make),
``edgeseg bench --convert`` and :func:`export` all take the format from there. The module:

- imports nothing heavy at module level (no torch, no vendor converter): the table must load for
  ``edgeseg convert --help`` in milliseconds. Import them inside the export function.
- defines ``def export_<format>(job: ExportJob) -> None`` that writes the artifact at ``job.path``
  (a temporary file beside the target, or an empty temporary folder for folder formats; the caller
  renames it into place only when the function returns, and deletes it on any error), embeds
  ``job.meta`` where the format keeps metadata, and wraps each step in ``with job.stage("name"):``
  (a progress-bar step; an exception inside becomes ``ConversionError("<format> export failed at
  stage 'name': ...")``). ``job.net`` is the fused float32 eval module, ``job.im`` the
  ``(1, 3, H, W)`` example input, ``job.options`` the format's options with defaults filled in.
- ends with ``EXPORTER = Exporter(...)`` declaring: ``name`` (the ``--to`` value), ``title``,
  ``suffix`` (``.onnx``; or ``_x_model`` with ``folder=True`` and ``folder_files`` = glob patterns
  of what the folder holds, so an existing folder with other files is never replaced),
  ``description`` and ``contents`` (the ``--help`` table), ``options`` (shared :class:`Option`
  declarations such as ``HALF``, ``DYNAMIC``, ``OPSET``, ``SIMPLIFY``, ``INT8``, ``DATA``,
  ``CALIB_IMAGES`` from :mod:`.registry`, or a new ``Option`` declared in the module; each becomes a
  keyword of :func:`export` and a flag of ``edgeseg convert``), ``defaults`` (per-format option
  defaults), ``requires`` and ``extra`` (modules checked before any work; a missing one names
  ``pip install 'edgeseg[<extra>]'``), ``backend`` (the edgeseg backend that runs the artifact),
  ``bench`` (whether ``bench --convert`` makes it), ``precisions`` (default: fp32, plus fp16 with
  ``half``, int8 with ``int8``), ``stages`` (the number of ``job.stage`` steps, or a function of the
  options) and ``check`` (extra validation of the options, before the checkpoint is loaded).

Options a format does not take are refused when given (``opset applies to ONNX exports only``).
Shared helpers go in a private module (``_name.py``), which discovery skips. The test of a new
format exports the COCO checkpoint from ``../shared/assets`` and runs the artifact through
``Runtime`` (see ``tests/test_converters_export.py``); ``tests/test_export_registry.py`` already
checks that every registered format reaches ``convert --help``, the board profiles and bench.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple, Union

from edgeseg._version import __version__
from edgeseg.errors import ConversionError, EdgesegError, InputError

from .registry import Exporter, ExportJob, exporters, get_exporter, quiet_logger, require, resolve_options

if TYPE_CHECKING:  # pragma: no cover
    from ..checkpoint import LoadedModel

__all__ = ["export", "export_metadata", "exporters", "get_exporter", "EXPORT_FORMATS"]

ImgSz = Union[int, Sequence[int]]


def export(
    model: Union[str, Path, "LoadedModel"],
    to: str = "onnx",
    imgsz: Optional[ImgSz] = None,
    half: bool = False,
    dynamic: bool = False,
    opset: Optional[int] = None,
    simplify: bool = False,
    out: Optional[Union[str, Path]] = None,
    progress: bool = True,
    **options: Any,
) -> Path:
    """Export ``model`` (a checkpoint path or a :class:`LoadedModel`) to format ``to``.

    Args:
        to: a registered format (``edgeseg convert --help`` lists them with their artifacts).
        imgsz: input size, ``640`` or ``(h, w)`` in pixels (rounded up to a multiple of the
            stride, 32); default the checkpoint's training size.
        half: fp16 weights. ONNX: the graph is converted to float16 after export
            (onnxconverter-common), input and outputs stay float32; OpenVINO: fp16-compressed weights,
            float32 input and outputs; TorchScript: traced in fp16, fp16 input and outputs; ncnn:
            fp16 weights in the ``.bin``.
        dynamic: dynamic batch, height and width (ONNX, OpenVINO, TorchScript).
        opset: ONNX opset; <= 17 uses the TorchScript-based exporter, >= 18 the dynamo exporter
            (default 17).
        simplify: run onnxslim on the ONNX graph.
        out: output path (a file, or the folder for folder formats); default beside the
            checkpoint: ``<stem><suffix>`` (``yolov8n-seg.onnx``, ``yolov8n-seg_openvino_model/``).
            An existing directory given for a file format receives ``<stem><suffix>`` inside.
        progress: show a progress bar of the stages on stderr.
        options: the options of other formats (``int8=True, data="coco128-seg.yaml"``...), by
            the names their exporters declare.

    Returns the path of the artifact. Raises InputError for a bad option (before any work) and
    ConversionError naming the stage for a failed export (nothing is left behind).
    """
    exporter = get_exporter(to)
    opts = resolve_options(exporter, {"half": half, "dynamic": dynamic, "opset": opset, "simplify": simplify,
                                      **options})
    for module in exporter.requires:
        require(module, f"{exporter.title} export", exporter.extra, exporter.install)
    fmt = exporter.name

    from tqdm import tqdm

    total = 2 + exporter.stage_count(opts)  # + load checkpoint, prepare model
    bar = tqdm(total=total, desc=f"export {fmt}", unit="stage", file=sys.stderr, disable=not progress, leave=False)

    @contextlib.contextmanager
    def stage(name: str) -> Iterator[None]:
        bar.set_postfix_str(name)
        try:
            yield
        except EdgesegError:
            raise
        except Exception as exc:
            raise ConversionError(f"{fmt} export failed at stage '{name}': {type(exc).__name__}: {_short(exc)}") from exc
        bar.update(1)

    try:
        with stage("load checkpoint"):
            from ..checkpoint import LoadedModel, load_model

            loaded = model if isinstance(model, LoadedModel) else load_model(model)
        return _export(loaded, exporter, imgsz, opts, out, stage)
    finally:
        bar.close()


def _export(loaded: "LoadedModel", exporter: Exporter, imgsz: Optional[ImgSz], opts: Dict[str, Any],
            out: Optional[Union[str, Path]], stage: Any) -> Path:
    import copy

    import torch

    from edgeseg.io import atomic_dir, atomic_write

    hw = _check_imgsz(imgsz if imgsz is not None else loaded.imgsz, loaded.stride)
    target = _target(loaded, exporter, out)
    meta = _metadata(loaded, hw, exporter, opts)
    name = target.name[: -len(exporter.suffix)] if target.name.endswith(exporter.suffix) else target.stem
    if exporter.folder:
        _refuse_foreign_folder(target, exporter)

    with stage("prepare model (fuse, dry run)"):
        net = copy.deepcopy(loaded.model).float().eval().fuse()
        for p in net.parameters():
            p.requires_grad_(False)
        im = torch.zeros(1, 3, *hw)
        with torch.no_grad():
            net(im)  # shapes are valid before any file is written

    try:
        with torch.no_grad(), _quiet():
            with (atomic_dir(target) if exporter.folder else atomic_write(target)) as tmp:
                exporter.export(ExportJob(loaded=loaded, net=net, im=im, imgsz=hw, options=opts, meta=meta,
                                          path=Path(tmp), name=name, target=target, stage=stage))
    except OSError as exc:  # creating the temp file / renaming it into place
        raise ConversionError(f"{exporter.name} export: cannot write {target}: {exc}") from exc
    return target


def export_metadata(loaded: "LoadedModel", hw: Tuple[int, int], *, half: bool, dynamic: bool, fmt: str,
                    opset: Optional[int] = None, simplify: bool = False, **options: Any) -> Dict[str, Any]:
    """The metadata every artifact carries (Python values; each format serializes them)."""
    exporter = get_exporter(fmt)
    given = {"half": half, "dynamic": dynamic, "opset": opset, "simplify": simplify, **options}
    return _metadata(loaded, hw, exporter, resolve_options(exporter, given))


def _metadata(loaded: "LoadedModel", hw: Tuple[int, int], exporter: Exporter, opts: Mapping[str, Any]) -> Dict[str, Any]:
    half, dynamic = bool(opts.get("half")), bool(opts.get("dynamic"))
    args: Dict[str, Any] = {"batch": 1, "half": half, "dynamic": dynamic, "format": exporter.name}
    args.update({k: (str(v) if isinstance(v, Path) else v) for k, v in opts.items() if k not in args})
    return {
        "description": f"edgeseg export of {loaded.arch_name} from {loaded.source.name}",
        "author": "edgeseg",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "version": __version__,
        "license": str(loaded.info.get("license") or ""),
        "stride": int(loaded.stride),
        "task": "segment",
        "batch": 1,
        "imgsz": [int(hw[0]), int(hw[1])],
        "names": {int(k): str(v) for k, v in loaded.names.items()},
        "args": args,
        "channels": 3,
        "edgeseg_version": __version__,
        "output_layout": "raw",
        "quantization": "int8" if opts.get("int8") else "fp16" if half else "fp32",
        "source_sha256": loaded.sha256,
        "dynamic": dynamic,
    }


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' chatter that says nothing about the user's model (tracer and
    deprecation warnings, the dynamo exporter's "torchvision is not installed" log lines).
    Errors still propagate."""
    import warnings

    import torch

    with quiet_logger("torch.onnx"), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _short(exc: BaseException, limit: int = 400) -> str:
    """The first line of a vendor error (torch errors can hold whole graph dumps), capped."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_imgsz(imgsz: ImgSz, stride: int) -> Tuple[int, int]:
    if isinstance(imgsz, (int, float)):
        hw = [int(imgsz), int(imgsz)]
    else:
        hw = [int(v) for v in imgsz]
        if len(hw) == 1:
            hw *= 2
    if len(hw) != 2 or min(hw) <= 0:
        raise InputError(f"imgsz must be a positive int or (h, w), got {imgsz!r}")
    fixed = [-(-v // stride) * stride for v in hw]
    if fixed != hw:
        print(f"edgeseg: imgsz {hw} is not a multiple of the stride {stride}; using {fixed}", file=sys.stderr)
    return (fixed[0], fixed[1])


def _target(loaded: "LoadedModel", exporter: Exporter, out: Optional[Union[str, Path]]) -> Path:
    stem = loaded.source.stem
    if out is None:
        return loaded.source.with_name(exporter.artifact(stem))
    out = Path(out)
    if exporter.folder:
        file_suffixes = {e.suffix for e in exporters().values() if not e.folder}
        if out.suffix.lower() in file_suffixes or _matches(out.name, exporter.folder_files):
            raise InputError(f"for {exporter.name}, out is the output folder (e.g. {exporter.artifact(stem)}), "
                             f"got a file name {out.name!r}")
        if exporter.suffix.startswith(".") and out.suffix.lower() != exporter.suffix.lower():
            return out / exporter.artifact(stem)  # a bundle named by its suffix (.mlpackage): out is its parent
        return out
    if out.is_dir():
        return out / exporter.artifact(stem)
    return out


def _matches(name: str, patterns: Sequence[str]) -> bool:
    import fnmatch

    return any(fnmatch.fnmatch(name.lower(), p.lower()) for p in patterns)


def _refuse_foreign_folder(target: Path, exporter: Exporter) -> None:
    """An existing export folder of the same format is replaced; any other folder is left alone."""
    if target.exists():
        if not target.is_dir():
            raise ConversionError(f"{exporter.name} export: {target} exists and is not a folder")
        foreign = [p.name for p in target.iterdir() if not _matches(p.name, exporter.folder_files)]
        if foreign:
            raise ConversionError(
                f"{exporter.name} export: {target} exists and holds files that are not an {exporter.title} export "
                f"({', '.join(sorted(foreign)[:5])}); choose another --out"
            )


def __getattr__(name: str) -> Any:
    if name == "EXPORT_FORMATS":  # format -> (artifact suffix, description), read from the registry
        return {n: (e.suffix, e.description) for n, e in exporters().items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _CallableModule(types.ModuleType):
    """``edgeseg.converters.export`` is this package and, when called, :func:`export` — so
    ``edgeseg.converters.export(...)`` works whichever of the two Python bound to that name."""

    def __call__(self, *args: Any, **kwargs: Any) -> Path:
        return export(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
