"""``edgeseg doctor``: what this machine can run, and why not where it cannot.

:func:`collect` gathers one report (a dict of sections) and never raises: every probe runs in
:func:`_probe`, which records an exception as the section's ``error`` instead of letting it
escape. Sections:

- ``python``/``os``: interpreter, OS and architecture; ``edgeseg``: version and install path
- ``board``: the detected board profile and the facts that matched (:mod:`edgeseg.tools.profiles`)
- ``backends``: every backend, whether it is available, its vendor version, or why it is missing
- ``delegates``: the Edge TPU library for this OS (:data:`EDGETPU_LIBRARY`) and whether it loads,
  Coral USB devices present, ONNX Runtime execution providers, OpenVINO devices, ncnn Vulkan GPUs
- ``opencv``: version and build facts (GUI, GStreamer, FFmpeg, V4L2)
- ``cameras``: ``/dev/video*`` devices with their names (Linux), picamera2
- ``converters``: whether torch (the ``convert`` extra) is installed (found, not imported)

File paths are read under ``root`` (a fixture tree in tests), like board detection.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import platform
import re
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Union

from ..backend import module_available
from ..live.sources.cameras import camera_devices, list_cameras  # the one camera lister (list_cameras re-exported)
from ..runtimes.litert import EDGETPU_LIBRARY  # the one table: the backend loads these names

__all__ = ["collect", "format_report", "EDGETPU_LIBRARY", "CORAL_USB_IDS", "opencv_build_facts", "list_cameras"]

#: Coral USB Accelerator ids: before firmware load, after
CORAL_USB_IDS: Dict[str, str] = {"1a6e:089a": "Coral USB Accelerator (no firmware yet)",
                                 "18d1:9302": "Coral USB Accelerator"}
#: label -> line name in cv2.getBuildInformation()
OPENCV_FACTS: Dict[str, str] = {"GUI": "GUI", "GStreamer": "GStreamer", "FFmpeg": "FFMPEG", "V4L2": "v4l/v4l2"}


def _probe(func: Callable[[], Any]) -> Any:
    """Run one probe; an exception becomes ``{"error": "Type: message"}`` (doctor never raises)."""
    try:
        return func()
    except BaseException as exc:  # noqa: B902 - even SystemExit from a vendor import must not escape
        if isinstance(exc, KeyboardInterrupt):
            raise
        return {"error": f"{type(exc).__name__}: {exc}"}


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 while vendor libraries load (coremltools, ncnn's Vulkan loader and
    others print warnings from C code); their failures still reach the report as exceptions."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                yield
            finally:
                try:
                    sys.stderr.flush()
                except (OSError, ValueError):
                    pass
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def _python() -> Dict[str, Any]:
    return {"version": platform.python_version(), "implementation": platform.python_implementation(),
            "executable": sys.executable}


def _os(system: str, machine: str) -> Dict[str, Any]:
    return {"system": system, "machine": machine, "platform": platform.platform(), "cpu_count": os.cpu_count()}


def _edgeseg() -> Dict[str, Any]:
    from .. import __version__

    return {"version": __version__, "path": str(Path(__file__).resolve().parent)}


def _board(root: Path, system: Optional[str], machine: Optional[str]) -> Dict[str, Any]:
    from .profiles import detect_all, gather_facts

    facts = gather_facts(root, system=system, machine=machine)
    matches = [d for d in detect_all(facts) if d.matched]
    if not matches:
        return {"name": None, "reasons": ["no profile matches"], "facts": facts.to_dict()}
    best = matches[0]
    return {"name": best.profile.name, "title": best.profile.title, "reasons": best.reasons,
            "also": [d.profile.name for d in matches[1:]], "facts": facts.to_dict()}


def _backends() -> List[Dict[str, Any]]:
    from ..backend import backend_status

    return [{"name": s.name, "format": s.format, "available": s.available, "version": s.version,
             "reason": s.reason, "extra": s.extra, "suffixes": list(s.suffixes)}
            for s in backend_status(import_vendor=True)]


def _edgetpu(system: str) -> Dict[str, Any]:
    import ctypes

    lib = EDGETPU_LIBRARY.get(system)
    if lib is None:
        return {"library": None, "found": False, "reason": f"no Edge TPU runtime exists for {system}"}
    try:
        ctypes.CDLL(lib)
    except OSError as exc:
        return {"library": lib, "found": False,
                "reason": f"{exc}; install the Edge TPU runtime (libedgetpu) from Coral's package repository"}
    return {"library": lib, "found": True, "reason": None}


def _coral_usb(root: Path) -> List[str]:
    from .profiles import gather_facts

    ids = gather_facts(root).usb_ids
    return [f"{i} {name}" for i, name in CORAL_USB_IDS.items() if i in ids]


def _vendor(module: str) -> Any:
    """Import a vendor module only when it is installed (None otherwise)."""
    return importlib.import_module(module) if module_available(module) else None


def _ort_providers() -> Any:
    ort = _vendor("onnxruntime")
    return None if ort is None else list(ort.get_available_providers())


def _openvino_devices() -> Any:
    ov = _vendor("openvino")
    return None if ov is None else list(ov.Core().available_devices)


def _ncnn_gpus() -> Any:
    ncnn = _vendor("ncnn")
    if ncnn is None:
        return None
    count = getattr(ncnn, "get_gpu_count", None)
    return int(count()) if count is not None else 0


def opencv_build_facts(build_info: str) -> Dict[str, str]:
    """GUI / GStreamer / FFmpeg / V4L2 lines of ``cv2.getBuildInformation()`` (e.g. ``"YES (...)"``)."""
    out = {}
    for label, key in OPENCV_FACTS.items():
        m = re.search(rf"^\s*{re.escape(key)}:\s*(.+)$", build_info, flags=re.MULTILINE)
        out[label] = m.group(1).strip() if m else "unknown"
    return out


def _opencv() -> Dict[str, Any]:
    cv2 = _vendor("cv2")
    if cv2 is None:
        return {"error": "OpenCV (cv2) is not installed: pip install opencv-python-headless"}
    return {"version": cv2.__version__, **opencv_build_facts(cv2.getBuildInformation())}


def _cameras(root: Path, system: str) -> Dict[str, Any]:
    out: Dict[str, Any] = {"devices": camera_devices(root) if system == "Linux" else [],
                           "picamera2": module_available("picamera2")}
    if system != "Linux":
        out["note"] = f"cameras are not enumerated on {system}; use --camera 0, 1, ..."
    return out


def _converters() -> Dict[str, Any]:
    from importlib import metadata

    if not module_available("torch"):
        return {"available": False, "reason": "torch not installed (pip install 'edgeseg[convert]')"}
    try:
        version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {"available": True, "torch": version}


def collect(root: Union[str, Path] = "/", system: Optional[str] = None, machine: Optional[str] = None) -> Dict[str, Any]:
    """The doctor report as plain data (JSON-serializable). Never raises."""
    r = Path(root)
    sysname = system if system is not None else platform.system()
    mach = machine if machine is not None else platform.machine()
    with _quiet_stderr():
        return _collect(r, system, machine, sysname, mach)


def _collect(r: Path, system: Optional[str], machine: Optional[str], sysname: str, mach: str) -> Dict[str, Any]:
    return {
        "python": _probe(_python),
        "os": _probe(lambda: _os(sysname, mach)),
        "edgeseg": _probe(_edgeseg),
        "board": _probe(lambda: _board(r, system, machine)),
        "backends": _probe(_backends),
        "delegates": {
            "edgetpu": _probe(lambda: _edgetpu(sysname)),
            "coral_usb": _probe(lambda: _coral_usb(r)),
            "onnxruntime_providers": _probe(_ort_providers),
            "openvino_devices": _probe(_openvino_devices),
            "ncnn_vulkan_gpus": _probe(_ncnn_gpus),
        },
        "opencv": _probe(_opencv),
        "cameras": _probe(lambda: _cameras(r, sysname)),
        "converters": _probe(_converters),
    }


def _err(section: Any) -> Optional[str]:
    return section.get("error") if isinstance(section, dict) else None


def format_report(rep: Dict[str, Any]) -> str:
    """The report as text for a terminal."""
    lines: List[str] = []

    def head(title: str) -> None:
        lines.append("")
        lines.append(title)

    def row(label: str, value: Any) -> None:
        lines.append(f"  {label:<24}{value}")

    py, osr, es = rep["python"], rep["os"], rep["edgeseg"]
    head("System")
    row("Python", _err(py) or f"{py['version']} ({py['implementation']}) {py['executable']}")
    row("OS", _err(osr) or f"{osr['system']} {osr['machine']} ({osr['platform']}), {osr['cpu_count']} CPUs")
    row("edgeseg", _err(es) or f"{es['version']} at {es['path']}")
    board = rep["board"]
    if _err(board):
        row("board", f"detection failed: {_err(board)}")
    elif board["name"]:
        row("board", f"{board['name']} ({board['title']}): {'; '.join(board['reasons'])}")
        if board.get("also"):
            row("", f"also matches: {', '.join(board['also'])}")
    else:
        row("board", "no profile matches this machine")

    head("Backends")
    backends = rep["backends"]
    if _err(backends):
        row("error", _err(backends))
    else:
        for b in backends:
            if b["available"]:
                state = f"ok       {b['version'] or ''}"
            else:
                state = f"missing  {b['reason']}"
            row(f"{b['name']} ({b['format']})", state)

    head("Delegates and devices")
    d = rep["delegates"]
    tpu = d["edgetpu"]
    if _err(tpu):
        row("Edge TPU library", _err(tpu))
    else:
        row("Edge TPU library", f"{tpu['library']}: found" if tpu["found"] else f"{tpu['library']}: not found ({tpu['reason']})")
    usb = d["coral_usb"]
    row("Coral USB", _err(usb) or (", ".join(usb) if usb else "none plugged in"))
    for key, label, missing in (("onnxruntime_providers", "ONNX Runtime providers", "onnxruntime not installed"),
                                ("openvino_devices", "OpenVINO devices", "openvino not installed"),
                                ("ncnn_vulkan_gpus", "ncnn Vulkan GPUs", "ncnn not installed")):
        v = d[key]
        row(label, _err(v) or (missing if v is None else (", ".join(v) if isinstance(v, list) else v)))

    head("OpenCV")
    cv = rep["opencv"]
    if _err(cv):
        row("error", _err(cv))
    else:
        row("version", cv["version"])
        for label in OPENCV_FACTS:
            row(label, cv[label])

    head("Cameras")
    cams = rep["cameras"]
    if _err(cams):
        row("error", _err(cams))
    else:
        for c in cams["devices"]:
            row(c["device"], c["name"] or "(no name)")
        if not cams["devices"]:
            row("devices", cams.get("note") or "no /dev/video* devices found")
        row("picamera2", "installed" if cams["picamera2"] else "not installed (Raspberry Pi cameras need it)")

    head("Converters")
    conv = rep["converters"]
    row("torch", _err(conv) or (conv["torch"] if conv["available"] else conv["reason"]))
    return "\n".join(lines).lstrip("\n")
