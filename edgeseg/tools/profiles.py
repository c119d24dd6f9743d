"""Board profiles: load, validate, detect and apply the per-board data in ``boards/*.yaml``.

A profile is data only (installed as the ``edgeseg.boards`` package data): which model formats and
backends to prefer on a board, precision, input size, threads, per-backend options, camera defaults,
the ``edgeseg convert`` recipe that produces its model, and the rules that recognise the board.

Detection reads system facts (all file paths relative to ``root``, so tests use fixture trees):

=====================  ==========================================================  ==============
rule                   fact                                                        matches when
=====================  ==========================================================  ==============
``system``             ``platform.system()`` (Linux, Darwin, Windows)              any listed
``machine``            ``platform.machine()`` (x86_64, aarch64, arm64, ...)        any listed
``device_tree_model``  ``<root>/proc/device-tree/model``                           any substring
``files``              paths under ``root`` (``etc/nv_tegra_release``)             all exist
``usb_ids``            ``<root>/sys/bus/usb/devices/*/idVendor`` + ``idProduct``   any present
``cpu_vendor``         ``vendor_id`` in ``<root>/proc/cpuinfo``                    any listed
``cpu_flags``          ``flags``/``Features`` in ``<root>/proc/cpuinfo``           all present
=====================  ==========================================================  ==============

A profile matches when every rule it lists matches; the matching profile with the highest
``priority`` wins (an accelerator such as the Coral USB stick outranks the host board it is plugged
into, a named board outranks the generic CPU profiles).

:func:`apply_profile` merges a profile under the options a user gave explicitly (explicit wins).
"""
from __future__ import annotations

import copy
import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple, Union

from ..converters.export.registry import PRECISIONS as PRECISION_OPTIONS
from ..errors import InputError

__all__ = [
    "BoardProfile",
    "SystemFacts",
    "Detection",
    "load_profiles",
    "load_profile",
    "get_profile",
    "parse_profile",
    "gather_facts",
    "detect",
    "detect_all",
    "apply_profile",
    "convert_command",
    "convert_gap",
    "convert_options",
    "convertible",
    "known_formats",
    "FORMATS",
    "BACKENDS",
    "PRECISIONS",
    "DETECT_RULES",
]

#: model formats a profile may prefer, besides every format ``edgeseg convert --to`` takes
#: (:func:`known_formats`): these have a backend but maybe no exporter yet
FORMATS: Tuple[str, ...] = ("onnx", "openvino", "tflite", "edgetpu", "ncnn", "coreml", "torchscript")
#: backend names a profile may prefer (the names ``--backend`` takes)
BACKENDS: Tuple[str, ...] = ("onnxruntime", "openvino", "litert", "ncnn", "coreml", "torch")
#: precisions a profile may ask for (the exporter registry's table: each precision's export option)
PRECISIONS: Tuple[str, ...] = tuple(PRECISION_OPTIONS)

_USB_ID = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{4}$")
_REQUIRED: Dict[str, type] = {
    "name": str,
    "title": str,
    "description": str,
    "priority": int,
    "detect": dict,
    "formats": list,
    "backends": list,
    "precision": str,
    "imgsz": int,
    "backend_options": dict,
    "camera": dict,
    "convert": dict,
}
_CAMERA_KEYS = {"source": str, "width": int, "height": int, "fps": int, "picamera2": bool}


@dataclass(frozen=True)
class BoardProfile:
    """One board's profile (the parsed, validated YAML file)."""

    name: str
    title: str
    description: str
    priority: int
    detect: Dict[str, List[str]]
    formats: List[str]
    backends: List[str]
    precision: str
    imgsz: int
    threads: Optional[int]
    backend_options: Dict[str, Dict[str, Any]]
    camera: Dict[str, Any]
    convert: Dict[str, Any]
    source: str = ""

    def to_dict(self) -> Dict[str, Any]:
        """The profile as plain data (what the YAML file holds), plus the rendered convert command."""
        d = {k: copy.deepcopy(getattr(self, k)) for k in _REQUIRED}
        d["threads"] = self.threads
        d["convert_command"] = convert_command(self)
        gap = convert_gap(self)
        if gap:
            d["convert_note"] = gap
        return d


# ---------------------------------------------------------------------------------------- loading


def known_formats() -> Tuple[str, ...]:
    """:data:`FORMATS` plus every format the exporter registry makes."""
    return tuple(dict.fromkeys(FORMATS + tuple(convertible())))


def parse_profile(data: Any, source: str = "<data>") -> BoardProfile:
    """Validate the data of one profile file; raises :class:`InputError` naming ``source``."""

    def bad(msg: str) -> InputError:
        return InputError(f"board profile {source}: {msg}")

    if not isinstance(data, dict):
        raise bad(f"expected a mapping at the top level, found {type(data).__name__}")
    for key, typ in _REQUIRED.items():
        if key not in data:
            raise bad(f"missing key {key!r}")
        if not isinstance(data[key], typ) or (typ is int and isinstance(data[key], bool)):
            raise bad(f"{key!r} must be a {typ.__name__}, found {type(data[key]).__name__}")
    unknown = set(data) - set(_REQUIRED) - {"threads"}
    if unknown:
        raise bad(f"unknown keys {sorted(unknown)}; expected {sorted(set(_REQUIRED) | {'threads'})}")
    threads = data.get("threads")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise bad(f"'threads' must be a positive integer or null, found {threads!r}")
    formats = known_formats()
    for key, allowed in (("formats", formats), ("backends", BACKENDS)):
        vals = data[key]
        if not vals or any(v not in allowed for v in vals):
            raise bad(f"{key!r} must be a non-empty list of {', '.join(allowed)}; found {vals!r}")
    if data["precision"] not in PRECISIONS:
        raise bad(f"'precision' must be one of {', '.join(PRECISIONS)}, found {data['precision']!r}")
    if data["imgsz"] <= 0 or data["imgsz"] % 32:
        raise bad(f"'imgsz' must be a positive multiple of 32, found {data['imgsz']}")
    for be, opts in data["backend_options"].items():
        if be not in BACKENDS or not isinstance(opts, dict):
            raise bad(f"backend_options keys must be backend names ({', '.join(BACKENDS)}) mapping to "
                      f"option mappings; found {be!r}: {type(opts).__name__}")
    for key, val in data["camera"].items():
        typ = _CAMERA_KEYS.get(key)
        if typ is None or not isinstance(val, typ):
            raise bad(f"camera.{key} must be one of {sorted(_CAMERA_KEYS)} with a value of that type, found {val!r}")
    conv = data["convert"]
    if conv.get("to") not in formats or conv.get("precision", "fp32") not in PRECISIONS:
        raise bad(f"convert needs 'to' (one of {', '.join(formats)}) and an optional precision; found {conv!r}")
    if conv.get("imgsz", data["imgsz"]) != data["imgsz"]:
        raise bad(f"convert.imgsz must equal imgsz ({data['imgsz']}), found {conv.get('imgsz')}")
    det = data["detect"]
    if not det:
        raise bad("'detect' must name at least one rule")
    rules: Dict[str, List[str]] = {}
    for rule, values in det.items():
        if rule not in DETECT_RULES:
            raise bad(f"unknown detect rule {rule!r}; expected one of {', '.join(DETECT_RULES)}")
        if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
            raise bad(f"detect.{rule} must be a non-empty list of strings, found {values!r}")
        if rule == "usb_ids":
            values = [v.lower() for v in values]
            badids = [v for v in values if not _USB_ID.match(v)]
            if badids:
                raise bad(f"detect.usb_ids must look like 1a6e:089a (vendor:product hex), found {badids}")
        rules[rule] = list(values)
    return BoardProfile(
        name=data["name"], title=data["title"], description=" ".join(data["description"].split()),
        priority=data["priority"], detect=rules, formats=list(data["formats"]), backends=list(data["backends"]),
        precision=data["precision"], imgsz=data["imgsz"], threads=threads,
        backend_options=copy.deepcopy(data["backend_options"]), camera=dict(data["camera"]),
        convert=dict(conv), source=source,
    )


def load_profile(path: Union[str, Path]) -> BoardProfile:
    """Load and validate one profile file; its ``name`` must equal the file's stem."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"board profile {p}: cannot read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise InputError(f"board profile {p}: not valid YAML: {exc}") from exc
    prof = parse_profile(data, source=str(p))
    if prof.name != p.stem:
        raise InputError(f"board profile {p}: name {prof.name!r} must equal the file name {p.stem!r}")
    return prof


_CACHE: Dict[str, Dict[str, BoardProfile]] = {}


def load_profiles(directory: Optional[Union[str, Path]] = None) -> Dict[str, BoardProfile]:
    """All profiles by name, sorted by name. Default: the installed ``edgeseg.boards`` data
    (read with :mod:`importlib.resources`), or the ``*.yaml`` files in ``directory``."""
    key = str(directory) if directory is not None else ""
    if key in _CACHE:
        return dict(_CACHE[key])
    profiles: Dict[str, BoardProfile] = {}
    if directory is not None:
        files = sorted(Path(directory).glob("*.yaml"))
        for f in files:
            prof = load_profile(f)
            profiles[prof.name] = prof
    else:
        import importlib.resources as resources

        import yaml

        root = resources.files("edgeseg.boards")
        for entry in sorted(root.iterdir(), key=lambda e: e.name):
            if not entry.name.endswith(".yaml"):
                continue
            src = f"edgeseg.boards/{entry.name}"
            try:
                data = yaml.safe_load(entry.read_text(encoding="utf-8"))
            except yaml.YAMLError as exc:
                raise InputError(f"board profile {src}: not valid YAML: {exc}") from exc
            prof = parse_profile(data, source=src)
            if prof.name != entry.name[: -len(".yaml")]:
                raise InputError(f"board profile {src}: name {prof.name!r} must equal the file name")
            profiles[prof.name] = prof
    if not profiles:
        where = directory if directory is not None else "the edgeseg.boards package"
        raise InputError(f"no board profiles (*.yaml) found in {where}")
    _CACHE[key] = profiles
    return dict(profiles)


def get_profile(name: str, directory: Optional[Union[str, Path]] = None) -> BoardProfile:
    """One profile by name; an unknown name raises :class:`InputError` listing the known ones."""
    profiles = load_profiles(directory)
    if name not in profiles:
        raise InputError(f"unknown board {name!r}; expected one of: {', '.join(profiles)} (or auto)")
    return profiles[name]


# -------------------------------------------------------------------------------------- detection


@dataclass(frozen=True)
class SystemFacts:
    """What detection looks at, read once from the system (or a fixture tree under ``root``)."""

    root: str
    system: str
    machine: str
    device_tree_model: Optional[str]
    usb_ids: FrozenSet[str]
    cpu_vendor: Optional[str]
    cpu_flags: FrozenSet[str]

    def to_dict(self) -> Dict[str, Any]:
        return {
            "root": self.root, "system": self.system, "machine": self.machine,
            "device_tree_model": self.device_tree_model, "usb_ids": sorted(self.usb_ids),
            "cpu_vendor": self.cpu_vendor, "cpu_flags": len(self.cpu_flags),
        }


def _read_text(path: Path) -> Optional[str]:
    try:
        return path.read_bytes().decode("utf-8", "replace")
    except OSError:
        return None


def _usb_ids(root: Path) -> FrozenSet[str]:
    ids = set()
    base = root / "sys" / "bus" / "usb" / "devices"
    try:
        devices = sorted(base.iterdir())
    except OSError:
        return frozenset()
    for dev in devices:
        vendor, product = _read_text(dev / "idVendor"), _read_text(dev / "idProduct")
        if vendor and product:
            ids.add(f"{vendor.strip().lower()}:{product.strip().lower()}")
    return frozenset(ids)


def _cpuinfo(root: Path) -> Tuple[Optional[str], FrozenSet[str]]:
    text = _read_text(root / "proc" / "cpuinfo") or ""
    vendor: Optional[str] = None
    flags: set = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "vendor_id" and vendor is None:
            vendor = value.strip()
        elif key in ("flags", "features"):
            flags.update(value.split())
    return vendor, frozenset(flags)


def gather_facts(root: Union[str, Path] = "/", system: Optional[str] = None,
                 machine: Optional[str] = None) -> SystemFacts:
    """Read the facts detection uses. ``root`` prefixes every file path (a fixture tree in tests);
    ``system``/``machine`` default to :func:`platform.system` / :func:`platform.machine`."""
    r = Path(root)
    model = _read_text(r / "proc" / "device-tree" / "model")
    if model is not None:
        model = model.replace("\x00", "").strip() or None
    vendor, flags = _cpuinfo(r)
    if vendor is None and str(root) in ("/", "") and system is None:
        # Windows and macOS have no /proc/cpuinfo; platform.processor() names the vendor on Windows
        proc = platform.processor()
        vendor = next((v for v in ("GenuineIntel", "AuthenticAMD") if v in proc), None)
    return SystemFacts(
        root=str(r), system=system if system is not None else platform.system(),
        machine=machine if machine is not None else platform.machine(),
        device_tree_model=model, usb_ids=_usb_ids(r), cpu_vendor=vendor, cpu_flags=flags,
    )


def _rule_any_equal(fact: Optional[str], wanted: Sequence[str], what: str) -> Tuple[bool, str]:
    if fact is not None and fact.lower() in {w.lower() for w in wanted}:
        return True, f"{what} is {fact}"
    return False, f"{what} is {fact or 'unknown'}, expected one of {', '.join(wanted)}"


def _rule_system(facts: SystemFacts, wanted: Sequence[str]) -> Tuple[bool, str]:
    return _rule_any_equal(facts.system, wanted, "OS")


def _rule_machine(facts: SystemFacts, wanted: Sequence[str]) -> Tuple[bool, str]:
    return _rule_any_equal(facts.machine, wanted, "architecture")


def _rule_cpu_vendor(facts: SystemFacts, wanted: Sequence[str]) -> Tuple[bool, str]:
    return _rule_any_equal(facts.cpu_vendor, wanted, "CPU vendor")


def _rule_device_tree(facts: SystemFacts, wanted: Sequence[str]) -> Tuple[bool, str]:
    model = facts.device_tree_model
    if model is None:
        return False, "no /proc/device-tree/model"
    hit = next((w for w in wanted if w.lower() in model.lower()), None)
    if hit:
        return True, f"device-tree model {model!r} contains {hit!r}"
    return False, f"device-tree model {model!r} contains none of {', '.join(map(repr, wanted))}"


def _rule_files(facts: SystemFacts, wanted: Sequence[str]) -> Tuple[bool, str]:
    missing = [f for f in wanted if not (Path(facts.root) / f.lstrip("/")).exists()]
    if missing:
        return False, f"missing /{', /'.join(m.lstrip('/') for m in missing)}"
    return True, f"found /{', /'.join(f.lstrip('/') for f in wanted)}"


def _rule_usb(facts: SystemFacts, wanted: Sequence[str]) -> Tuple[bool, str]:
    hits = [w for w in wanted if w.lower() in facts.usb_ids]
    if hits:
        return True, f"USB device {', '.join(hits)} present"
    return False, f"no USB device {' or '.join(wanted)}"


def _rule_cpu_flags(facts: SystemFacts, wanted: Sequence[str]) -> Tuple[bool, str]:
    missing = [w for w in wanted if w.lower() not in facts.cpu_flags]
    if missing:
        return False, f"CPU lacks flags {', '.join(missing)}"
    return True, f"CPU has {', '.join(wanted)}"


#: rule name -> check(facts, values) -> (matched, human-readable reason)
DETECT_RULES: Dict[str, Callable[[SystemFacts, Sequence[str]], Tuple[bool, str]]] = {
    "system": _rule_system,
    "machine": _rule_machine,
    "device_tree_model": _rule_device_tree,
    "files": _rule_files,
    "usb_ids": _rule_usb,
    "cpu_vendor": _rule_cpu_vendor,
    "cpu_flags": _rule_cpu_flags,
}


@dataclass
class Detection:
    """How one profile fared against the system facts."""

    profile: BoardProfile
    matched: bool
    reasons: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return {"board": self.profile.name, "matched": self.matched, "priority": self.profile.priority,
                "reasons": list(self.reasons)}


def detect_all(facts: Optional[SystemFacts] = None,
               profiles: Optional[Mapping[str, BoardProfile]] = None) -> List[Detection]:
    """Every profile checked against ``facts``: matches first (highest priority first), then the rest."""
    facts = facts if facts is not None else gather_facts()
    profiles = profiles if profiles is not None else load_profiles()
    out = []
    for prof in profiles.values():
        results = [DETECT_RULES[rule](facts, values) for rule, values in prof.detect.items()]
        out.append(Detection(prof, all(ok for ok, _ in results), [why for _, why in results]))
    out.sort(key=lambda d: (not d.matched, -d.profile.priority, d.profile.name))
    return out


def detect(facts: Optional[SystemFacts] = None,
           profiles: Optional[Mapping[str, BoardProfile]] = None) -> Optional[Detection]:
    """The best matching profile for this machine (or ``facts``), or None when none matches."""
    found = detect_all(facts, profiles)
    return found[0] if found and found[0].matched else None


# ------------------------------------------------------------------------------------- applying


def convert_command(profile: BoardProfile, model: str = "MODEL.pt") -> str:
    """The ``edgeseg convert`` command line that produces this board's model."""
    conv = profile.convert
    parts = ["edgeseg", "convert", model, "--to", conv["to"], "--imgsz", str(conv.get("imgsz", profile.imgsz))]
    precision = conv.get("precision", "fp32")
    if precision == "fp16":
        parts.append("--half")
    elif precision == "int8":
        parts += ["--int8", "--data", "CALIB.yaml"]
    return " ".join(parts)


def convertible() -> Dict[str, Tuple[str, ...]]:
    """The formats ``edgeseg convert`` makes and the precisions of each, read from the exporter
    registry (:func:`edgeseg.converters.export.registry.exporters`; no torch import)."""
    from ..converters.export.registry import exporters

    return {name: exp.precisions for name, exp in exporters().items()}


def convert_gap(profile: BoardProfile) -> Optional[str]:
    """Why ``edgeseg convert`` cannot produce this board's model yet, or None when it can."""
    to, precision = profile.convert["to"], profile.convert.get("precision", "fp32")
    table = convertible()
    if to in table and precision in table[to]:
        return None
    missing = f"the {to} format" if to not in table else f"{precision} {to} models"
    makes = "; ".join(f"{name} in {' or '.join(precs)}" for name, precs in table.items())
    return (f"board {profile.name!r} runs {precision} {to} models, but edgeseg convert cannot make "
            f"{missing} yet (it makes {makes})")


def convert_options(profile: BoardProfile, explicit: Mapping[str, Any]) -> Dict[str, Any]:
    """``edgeseg convert`` options for a board: ``to``, ``imgsz`` and ``half`` (and ``int8`` for an
    int8 board whose format takes it) from the profile, under the options the user gave (``None`` /
    False = not given). Raises :class:`InputError` when the board's own format or precision cannot
    be made yet and the user did not pick a format."""
    from ..converters.export.registry import exporters

    conv = profile.convert
    to = explicit.get("to") or conv["to"]
    out = {
        "to": to,
        "imgsz": explicit.get("imgsz") or conv.get("imgsz", profile.imgsz),
        "half": bool(explicit.get("half")),
    }
    option = PRECISION_OPTIONS.get(conv.get("precision", "fp32"))
    exporter = exporters().get(to)
    if option is not None and exporter is not None and option in exporter.option_names:
        out[option] = True
    gap = convert_gap(profile)
    if gap and not explicit.get("to"):  # the board's own recipe cannot be followed yet
        raise InputError(gap + "; pass --to to choose a format it can make, e.g. --to onnx")
    return out


def _available_backend_for(profile: BoardProfile, model: Optional[Union[str, Path]]) -> Optional[str]:
    """The first of the profile's backends that is installed and opens ``model``."""
    if model is None:
        return None
    from ..backend import backend_classes

    classes = backend_classes()
    path = Path(model)
    for name in profile.backends:
        cls = classes.get(name)
        if cls is None or not cls.installed():
            continue
        try:
            if cls.handles(path):
                return name
        except OSError:
            continue
    return None


def _runtime_options(options: Mapping[str, Any]) -> Dict[str, Any]:
    """A profile's backend options as the backends take them: ``providers`` entries written in YAML
    as ``[name, {options}]`` become ``(name, {options})`` tuples (ONNX Runtime's form), and
    strings starting with ``~/`` are expanded to the home folder (TensorRT's engine cache path)."""

    def fix(value: Any) -> Any:
        if isinstance(value, str) and value.startswith("~/"):
            return os.path.expanduser(value)
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fix(v) for v in value]
        return value

    out = fix(copy.deepcopy(dict(options)))
    if isinstance(out.get("providers"), list):
        out["providers"] = [tuple(p) if isinstance(p, list) and len(p) == 2 and isinstance(p[1], dict) else p
                            for p in out["providers"]]
    return out


def apply_profile(profile: Optional[BoardProfile], explicit_options: Mapping[str, Any], *,
                  model: Optional[Union[str, Path]] = None) -> Dict[str, Any]:
    """Merge a board profile under the options a user gave explicitly; explicit options win.

    ``explicit_options`` holds the caller's options, ``None`` meaning "not given" (pass ``None``,
    not a default, for flags the user did not set; ``backend="auto"`` also counts as not given).
    Every explicit key is copied to the result; the profile fills these keys where they are unset:

    - ``board``: the profile name
    - ``backend``: the first of the profile's backends that is installed and opens ``model``
      (``"auto"`` when none does or no model is given)
    - ``imgsz`` (int), ``threads`` (int or None), ``precision`` ("fp32"/"fp16"/"int8")
    - ``backend_options``: the profile's options for the chosen backend, updated with an explicit
      ``backend_options`` mapping (key by key)
    - ``camera``: dict ``source``/``width``/``height``/``fps`` (explicit ``camera`` keys win)
    - ``to``: the format ``edgeseg convert --board`` produces (from the profile's recipe)

    With ``profile=None`` the explicit options are returned unchanged (``None`` values dropped).
    """
    out: Dict[str, Any] = {k: v for k, v in explicit_options.items() if v is not None}
    if profile is None:
        return out
    given = dict(out)
    if given.get("backend") == "auto":
        given.pop("backend")
    out["board"] = profile.name
    backend = given.get("backend") or _available_backend_for(profile, model) or "auto"
    out["backend"] = backend
    out.setdefault("imgsz", profile.imgsz)
    if "threads" not in given and profile.threads is not None:
        out["threads"] = profile.threads
    out.setdefault("precision", profile.precision)
    out.setdefault("to", profile.convert["to"])
    opts = _runtime_options(profile.backend_options.get(backend, {})) if backend != "auto" else {}
    opts.update(given.get("backend_options") or {})
    out["backend_options"] = opts
    cam = dict(profile.camera)
    cam.update({k: v for k, v in (given.get("camera") or {}).items() if v is not None})
    out["camera"] = cam
    return out
