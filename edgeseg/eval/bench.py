"""``edgeseg bench``: latency per stage, FPS, size, peak memory and mask mAP per model file and backend.

    >>> from edgeseg.eval.bench import BenchSettings, run_bench, to_markdown
    >>> report = run_bench(["yolov8n-seg.onnx"], BenchSettings(runs=20))
    >>> print(to_markdown(report))

Jobs are (model file, backend) pairs: every installed backend that opens a file (``backends``
narrows the list). A checkpoint (``.pt``) runs on the torch backend when it is installed and, with
``convert=True``, is first exported, through :func:`edgeseg.converters.export`, to each format of
the exporter registry whose exporter names a selected backend (:func:`exports_for_backend`); a
backend no exporter makes models for is listed as skipped with the reason. The exports live in a
temporary folder that :func:`run_bench` removes at the end.

Each job runs in its own Python process (``isolate=True``, the default) so the peak-memory figure
is that model's alone: the increase of the process's peak resident set size (``ru_maxrss``) from
just before the model is loaded to the end of the timed runs. Timings are per image, in
milliseconds: ``preprocess`` (letterbox, normalise), ``inference`` (the backend call),
``postprocess`` (decode, NMS, masks) and ``total``; medians and 90th percentiles over ``runs``
timed calls after ``warmup`` untimed ones. ``fps`` is ``1000 / median total`` (sequential; the
live pipeline overlaps stages). With ``data`` the model is also validated (mask mAP50-95 and
mAP50, box mAP50-95) through :mod:`edgeseg.eval.validate` when that module is present.

Each result records the model's precision (:func:`model_precision`). When a format (on one backend)
ran an fp32 model and fp16/int8 ones, :func:`precision_table` puts them side by side: speed-up of
each over the fp32 model and its mAP cost in points (``bench --model n.onnx --model n_int8.onnx
--model n_openvino_model --model n_int8_openvino_model --data D.yaml``).
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import EdgesegError, InputError

__all__ = ["BenchSettings", "BenchJob", "BenchResult", "BenchReport", "discover", "run_bench", "run_job",
           "to_markdown", "to_json", "exports_for_backend", "model_precision", "precision_table", "STAGES"]

STAGES: Tuple[str, ...] = ("preprocess", "inference", "postprocess", "total")
CHECKPOINT_SUFFIXES = (".pt", ".pth")
#: files in a models folder that are never models
IGNORED_SUFFIXES = (".npz", ".npy", ".yaml", ".yml", ".json", ".txt", ".md", ".bin", ".jpg", ".png")


@dataclass
class BenchSettings:
    """What every job shares. ``image``: a picture to time on (default: a synthetic 640x480 one)."""

    runs: int = 20
    warmup: int = 3
    imgsz: Optional[int] = None
    threads: Optional[int] = None
    image: Optional[str] = None
    data: Optional[str] = None
    conf: float = 0.25
    isolate: bool = True
    convert: bool = False
    backends: Optional[List[str]] = None

    def check(self) -> None:
        for name in ("runs", "warmup"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < (1 if name == "runs" else 0):
                raise InputError(f"{name} must be an integer >= {1 if name == 'runs' else 0}, found {v!r}")
        if self.image is not None and not Path(self.image).is_file():
            raise InputError(f"benchmark image not found: {self.image}")
        if self.data is not None and not Path(self.data).is_file():
            raise InputError(f"dataset file not found: {self.data} (expected a YOLO dataset .yaml)")


@dataclass
class BenchJob:
    """One (model file, backend) pair to time. ``origin``: how the file came to be (``file`` or
    ``exported from X.pt``)."""

    model: str
    backend: str
    format: str
    origin: str = "file"


@dataclass
class BenchResult:
    """The measurements of one job, or why it was skipped / failed (``status``)."""

    model: str
    backend: str
    format: str
    origin: str = "file"
    status: str = "ok"  # ok | skipped | failed
    reason: Optional[str] = None
    size_bytes: Optional[int] = None
    imgsz: Optional[List[int]] = None
    load_s: Optional[float] = None
    latency_ms: Dict[str, Dict[str, float]] = field(default_factory=dict)
    fps: Optional[float] = None
    peak_memory_mb: Optional[float] = None
    detections: Optional[int] = None
    metrics: Optional[Dict[str, float]] = None
    note: Optional[str] = None
    precision: Optional[str] = None  #: fp32 | fp16 | int8 (see :func:`model_precision`)


@dataclass
class BenchReport:
    system: Dict[str, Any]
    settings: Dict[str, Any]
    results: List[BenchResult]


# ------------------------------------------------------------------------------------- discovery


def _model_entries(folder: Path) -> List[Path]:
    """Model files and export folders inside ``folder`` (one level)."""
    from ..backend import backend_classes

    classes = list(backend_classes().values())
    out = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.suffix.lower() in IGNORED_SUFFIXES:
            continue
        if p.suffix.lower() in CHECKPOINT_SUFFIXES or any(c.handles(p) for c in classes):
            out.append(p)
        elif p.is_file():
            out.append(p)  # reported as an unsupported format rather than silently dropped
    return out


def discover(models: Sequence[str], models_dir: Optional[str], settings: BenchSettings,
             workdir: Optional[Path] = None) -> Tuple[List[BenchJob], List[BenchResult]]:
    """The jobs to run and the results already known to be skipped (with their reasons).

    With ``settings.convert``, checkpoints are exported into ``workdir`` (one export per format;
    required then, and the caller removes it: :func:`run_bench` uses a temporary folder)."""
    from ..backend import backend_classes

    classes = backend_classes()
    wanted = settings.backends
    if wanted:
        unknown = [b for b in wanted if b not in classes]
        if unknown:
            raise InputError(f"unknown backends {unknown}; expected some of {', '.join(classes)}")
    paths: List[Path] = [Path(m) for m in models]
    if models_dir is not None:
        d = Path(models_dir)
        if not d.is_dir():
            raise InputError(f"--models-dir {d}: not a folder")
        paths += _model_entries(d)
    if not paths:
        raise InputError("no models to benchmark: give --model FILE (repeatable) or --models-dir DIR")
    for p in paths:
        if not p.exists():
            raise InputError(f"model not found: {p}")
    jobs: List[BenchJob] = []
    skipped: List[BenchResult] = []
    for path in paths:
        before = len(jobs) + len(skipped)
        _path_jobs(path, classes, settings, workdir, jobs, skipped)
        if len(jobs) + len(skipped) == before:
            hint = " (add --convert to export it)" if path.suffix.lower() in CHECKPOINT_SUFFIXES else ""
            skipped.append(BenchResult(str(path), ",".join(wanted or []), "-", status="skipped",
                                       reason=f"none of the selected backends opens {path.name}{hint}"))
    return jobs, skipped


def _path_jobs(path: Path, classes: Dict[str, Any], settings: BenchSettings, workdir: Optional[Path],
               jobs: List[BenchJob], skipped: List[BenchResult]) -> None:
    """Append the jobs (and skips) of one model path."""
    wanted = settings.backends
    openers = [c for c in classes.values() if c.handles(path)]
    if not openers:
        skipped.append(BenchResult(str(path), "-", "-", status="skipped",
                                   reason=f"no backend opens {path.suffix or 'this folder'} files"))
        return
    for cls in openers:
        if wanted and cls.name not in wanted:
            continue
        if not cls.installed():
            skipped.append(BenchResult(str(path), cls.name, cls.format, status="skipped",
                                       reason=f"{' or '.join(cls.requires)} not installed "
                                              f"(pip install 'edgeseg[{cls.extra}]')"))
            continue
        jobs.append(BenchJob(str(path), cls.name, cls.format))
    if settings.convert and path.suffix.lower() in CHECKPOINT_SUFFIXES:
        j, s = _convert_jobs(path, settings, classes, workdir)
        jobs.extend(j)
        skipped.extend(s)


def exports_for_backend() -> Dict[str, List[str]]:
    """backend name -> the export formats ``bench --convert`` makes for it (from the exporter
    registry: formats whose exporter names that backend and has ``bench`` set)."""
    from edgeseg.converters.export.registry import exporters

    out: Dict[str, List[str]] = {}
    for name, exp in exporters().items():
        if exp.bench and exp.backend:
            out.setdefault(exp.backend, []).append(name)
    return out


def _convert_jobs(pt: Path, settings: BenchSettings, classes: Dict[str, Any],
                  workdir: Optional[Path]) -> Tuple[List[BenchJob], List[BenchResult]]:
    """Export ``pt`` to the formats of each selected, installed backend; jobs for the exports."""
    from edgeseg.converters.export.registry import exporters

    jobs: List[BenchJob] = []
    skipped: List[BenchResult] = []
    origin = f"exported from {pt.name}"
    made = exports_for_backend()
    targets: Dict[str, List[str]] = {}
    for name, cls in classes.items():
        if (settings.backends and name not in settings.backends) or not cls.installed():
            continue  # not installed: nothing could run the export anyway
        if name in made:
            for fmt in made[name]:
                targets.setdefault(fmt, []).append(name)
        elif not cls.handles(pt):  # the torch backend runs the checkpoint itself
            unbenched = [n for n, e in exporters().items() if e.backend == name]  # e.g. CoreML off macOS
            reason = (f"bench --convert does not make {', '.join(unbenched)} exports on this machine (the {name} "
                      "backend cannot run them here)" if unbenched else
                      f"edgeseg.converters.export cannot produce {cls.format!r} (it makes {', '.join(exporters())})")
            skipped.append(BenchResult(str(pt), name, cls.format, origin, status="skipped", reason=reason))
    if not targets:
        return jobs, skipped
    if workdir is None:
        raise InputError("converting checkpoints needs a workdir to export into (run_bench makes and removes one)")
    try:
        from edgeseg.converters.export import export
    except Exception as exc:  # ImportError, or torch failing to import
        for fmt, names in targets.items():
            for name in names:
                skipped.append(BenchResult(str(pt), name, fmt, origin, status="skipped",
                                           reason=f"converters unavailable ({type(exc).__name__}: {exc}); "
                                                  "pip install 'edgeseg[convert]'"))
        return jobs, skipped
    for fmt, names in targets.items():
        target = workdir / exporters()[fmt].artifact(pt.stem)
        try:
            artifact = export(str(pt), to=fmt, imgsz=settings.imgsz, out=str(target), progress=False)
        except EdgesegError as exc:
            for name in names:
                skipped.append(BenchResult(str(pt), name, fmt, origin, status="failed", reason=f"export failed: {exc}"))
            continue
        for name in names:
            if classes[name].handles(Path(artifact)):
                jobs.append(BenchJob(str(artifact), name, classes[name].format, origin))
    return jobs, skipped


# ------------------------------------------------------------------------------------ measuring


def _image(settings: BenchSettings) -> np.ndarray:
    if settings.image:
        from ..io import read_image

        return read_image(settings.image)
    # synthetic, deterministic: smooth gradients plus noise (no detections expected)
    # (built with small integer arrays, so the process's memory peak stays low before the model loads)
    rng = np.random.default_rng(0)
    xx = (np.arange(640, dtype=np.int32) * 255 // 640).astype(np.int16)[None, :]
    yy = (np.arange(480, dtype=np.int32) * 255 // 480).astype(np.int16)[:, None]
    img = np.empty((480, 640, 3), np.uint8)
    for c, plane in enumerate((xx + 0 * yy, yy + 0 * xx, (xx + yy) // 2)):
        noise = rng.integers(-20, 20, (480, 640), dtype=np.int16)
        img[..., c] = np.clip(plane + noise, 0, 255).astype(np.uint8)
    return img


def _status_mb(key: str) -> Optional[float]:
    """``VmRSS``/``VmHWM`` of this process in MiB from /proc/self/status (Linux), else None."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (Linux: ``5`` to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _MemoryProbe:
    """Peak resident memory added while a model loads and runs, in MiB.

    On Linux the peak counter is reset at the start, so the figure is ``peak RSS - RSS at start``
    and earlier transient peaks of the process do not hide it; elsewhere it is the increase of
    ``ru_maxrss`` (a lower bound when the process peaked higher before)."""

    def __init__(self) -> None:
        self.linux = _reset_peak() and _status_mb("VmHWM") is not None
        self.start = _status_mb("VmRSS") if self.linux else _peak_rss_mb()

    def peak_increase(self) -> Optional[float]:
        end = _status_mb("VmHWM") if self.linux else _peak_rss_mb()
        if self.start is None or end is None:
            return None
        return max(0.0, end - self.start)


def _peak_rss_mb() -> Optional[float]:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0  # bytes on macOS, KiB on Linux


def _stats(values: Sequence[float]) -> Dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"median": float(np.median(a)), "p90": float(np.percentile(a, 90)), "mean": float(a.mean()),
            "min": float(a.min())}


def _validate(rt: Any, data: str) -> Tuple[Optional[Dict[str, float]], Optional[str]]:
    """Box and mask mAP through :func:`edgeseg.eval.validate.validate` when that module exists:
    (flat metrics such as ``seg/mAP50-95``, a note when skipped)."""
    import importlib

    try:
        mod = importlib.import_module("edgeseg.eval.validate")
    except ImportError as exc:
        return None, f"mAP skipped: edgeseg.eval.validate is not available ({exc})"
    res = mod.validate(rt, data)
    flat = {k: float(v) for k, v in dict(res.results_dict).items()
            if isinstance(v, (int, float, np.floating)) and not isinstance(v, bool)}
    return flat, None


def model_precision(rt: Any) -> str:
    """``fp32``, ``fp16`` or ``int8``: the model's ``quantization`` metadata (every edgeseg export
    has it), else what the backend read from the file (``weights``: onnxruntime and LiteRT look at
    the operators), else int8 when an input or output is quantized, else fp32."""
    q = (rt.meta.quantization or "").lower()
    if q in ("fp32", "fp16", "int8"):
        return q
    weights = str(rt.backend.describe().get("weights", "")).lower()
    if weights.startswith("int8"):
        return "int8"
    if weights in ("float16", "fp16"):
        return "fp16"
    if any(s.quantized for s in list(rt.backend.inputs) + list(rt.backend.outputs)):
        return "int8"
    return "fp32"


def run_job(job: BenchJob, settings: BenchSettings) -> BenchResult:
    """Time one job in this process (see :func:`run_bench` for isolation)."""
    from ..io import path_size
    from ..runtime import Runtime

    res = BenchResult(job.model, job.backend, job.format, job.origin)
    path = Path(job.model)
    img = _image(settings)
    res.size_bytes = path_size(path)
    mem = _MemoryProbe()
    t0 = time.perf_counter()
    kwargs: Dict[str, Any] = dict(backend=job.backend, threads=settings.threads, conf=settings.conf)
    try:
        rt = Runtime(path, imgsz=settings.imgsz, **kwargs)
    except InputError:
        if settings.imgsz is None:
            raise
        t0 = time.perf_counter()
        rt = Runtime(path, **kwargs)  # a fixed-size export: it runs at its own input size
        res.note = f"fixed {rt.imgsz[0]}x{rt.imgsz[1]} input (--imgsz {settings.imgsz} not applicable)"
    try:
        res.load_s = time.perf_counter() - t0
        res.imgsz = list(rt.imgsz)
        res.precision = model_precision(rt)
        for _ in range(settings.warmup):
            rt.predict_one(img)
        times: Dict[str, List[float]] = {s: [] for s in STAGES}
        out = None
        for _ in range(settings.runs):
            out = rt.predict_one(img)
            for s in STAGES[:-1]:
                times[s].append(out.speed[s])
            times["total"].append(sum(out.speed[s] for s in STAGES[:-1]))
        res.latency_ms = {s: _stats(v) for s, v in times.items()}
        res.fps = 1000.0 / res.latency_ms["total"]["median"]
        res.detections = len(out) if out is not None else None
        res.peak_memory_mb = mem.peak_increase()
        if settings.data:
            res.metrics, note = _validate(rt, settings.data)
            if note:
                res.note = f"{res.note}; {note}" if res.note else note
    finally:
        rt.close()
    return res


def _run_isolated(job: BenchJob, settings: BenchSettings, timeout: float) -> BenchResult:
    with tempfile.TemporaryDirectory(prefix="edgeseg-bench-") as tmp:
        out = Path(tmp) / "result.json"
        payload = json.dumps({"job": asdict(job), "settings": asdict(settings), "out": str(out)})
        try:
            proc = subprocess.run([sys.executable, "-m", "edgeseg.eval.bench"], input=payload, capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return BenchResult(job.model, job.backend, job.format, job.origin, status="failed",
                               reason=f"did not finish within {timeout:.0f} s")
        if out.is_file():
            return BenchResult(**json.loads(out.read_text()))
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
        return BenchResult(job.model, job.backend, job.format, job.origin, status="failed",
                           reason=f"worker exited with code {proc.returncode}: {' | '.join(tail)[:500]}")


def _worker() -> int:
    """``python -m edgeseg.eval.bench``: read one job from stdin, write its result to the given file."""
    msg = json.loads(sys.stdin.read())
    job, settings = BenchJob(**msg["job"]), BenchSettings(**msg["settings"])
    try:
        result = run_job(job, settings)
    except EdgesegError as exc:
        result = BenchResult(job.model, job.backend, job.format, job.origin, status="failed", reason=str(exc))
    from ..io import atomic_write

    with atomic_write(msg["out"]) as tmp:
        tmp.write_text(json.dumps(asdict(result)), encoding="utf-8")
    return 0


def _system() -> Dict[str, Any]:
    info: Dict[str, Any] = {"python": platform.python_version(), "os": f"{platform.system()} {platform.machine()}",
                            "cpu_count": os.cpu_count()}
    try:
        from ..tools.profiles import detect

        found = detect()
        info["board"] = found.profile.name if found else None
    except EdgesegError as exc:
        info["board"] = f"unknown ({exc})"
    from .. import __version__

    info["edgeseg"] = __version__
    return info


def run_bench(models: Sequence[str] = (), settings: Optional[BenchSettings] = None, *,
              models_dir: Optional[str] = None, timeout: float = 1800.0, progress: bool = False) -> BenchReport:
    """Benchmark every (model, backend) pair; skipped and failed jobs are reported, not raised."""
    settings = settings or BenchSettings()
    settings.check()
    with tempfile.TemporaryDirectory(prefix="edgeseg-bench-exports-") as workdir:
        jobs, results = discover(models, models_dir, settings, Path(workdir))
        from tqdm import tqdm

        done: List[BenchResult] = []
        for job in tqdm(jobs, desc="bench", unit="model", file=sys.stderr, disable=not progress, leave=False):
            if settings.isolate:
                r = _run_isolated(job, settings, timeout)
            else:
                try:
                    r = run_job(job, settings)
                except EdgesegError as exc:
                    r = BenchResult(job.model, job.backend, job.format, job.origin, status="failed", reason=str(exc))
            done.append(r)
    return BenchReport(_system(), asdict(settings), done + results)


# ------------------------------------------------------------------------------------- reporting


def to_json(report: BenchReport) -> str:
    return json.dumps({"system": report.system, "settings": report.settings,
                       "results": [asdict(r) for r in report.results], "precisions": precision_table(report)},
                      indent=2)


def precision_table(report: BenchReport) -> List[Dict[str, Any]]:
    """fp32 vs fp16/int8 per format: for each (model file format, backend) that ran an fp32 model and at least
    one of another precision, one row per model of the group, fp32 first, with the speed-ups over the
    fp32 model (median inference and total) and the mAP differences in points (with ``--data``).
    Several fp32 models in a group: the first one is the reference."""
    groups: Dict[Tuple[str, str], List[BenchResult]] = {}
    for r in report.results:
        if r.status == "ok" and r.precision:
            groups.setdefault((_file_format(r), r.backend), []).append(r)
    order = {"fp32": 0, "fp16": 1, "int8": 2}
    rows: List[Dict[str, Any]] = []
    for (fmt, backend), members in groups.items():
        refs = [r for r in members if r.precision == "fp32"]
        if not refs or all(r.precision == "fp32" for r in members):
            continue
        ref = refs[0]
        for r in sorted(members, key=lambda r: (order.get(r.precision or "", 3), r is not ref)):
            row: Dict[str, Any] = {"format": fmt, "backend": backend, "precision": r.precision, "model": r.model,
                                   "reference": ref.model, "size_mb": (r.size_bytes or 0) / 1e6}
            for stage in ("inference", "total"):
                mine, base = r.latency_ms[stage]["median"], ref.latency_ms[stage]["median"]
                row[f"{stage}_ms"] = mine
                row[f"{stage}_speedup"] = base / mine if mine > 0 else None
            for key, name in (("seg/mAP50-95", "mask_map"), ("box/mAP50-95", "box_map")):
                mine_m, base_m = (r.metrics or {}).get(key), (ref.metrics or {}).get(key)
                row[name] = mine_m
                row[f"{name}_points"] = (None if mine_m is None or base_m is None
                                         else round((mine_m - base_m) * 100, 2))
            rows.append(row)
    return rows


def _file_format(r: BenchResult) -> str:
    """The model file's own format (an ``.onnx`` run by OpenVINO is onnx): its suffix, or for an
    export folder the format of the backend that opened it."""
    suffix = Path(r.model).suffix.lower().lstrip(".")
    return suffix if suffix and not Path(r.model).is_dir() else r.format


def _precision_markdown(rows: List[Dict[str, Any]]) -> List[str]:
    if not rows:
        return []
    lines = ["", "fp32 vs int8 per format (speed-up = fp32 median / this median, same run; mAP in points "
             "against the group's fp32 model):", "",
             "| format (backend) | precision | model | size MB | inference ms | speed-up | total ms | speed-up | "
             "mask mAP50-95 | mask vs fp32 | box mAP50-95 | box vs fp32 |", "|" + "---|" * 12]

    def pts(v: Optional[float]) -> str:
        return "-" if v is None else f"{v:+.2f}"

    def m(v: Optional[float]) -> str:
        return "-" if v is None or not np.isfinite(v) else f"{v:.3f}"

    for r in rows:
        lines.append(
            f"| {r['format']} ({r['backend']}) | {r['precision']} | {Path(r['model']).name} | {r['size_mb']:.1f} | "
            f"{r['inference_ms']:.1f} | {_fmt(r['inference_speedup'], 2)}x | {r['total_ms']:.1f} | "
            f"{_fmt(r['total_speedup'], 2)}x | {m(r['mask_map'])} | {pts(r['mask_map_points'])} | {m(r['box_map'])} | "
            f"{pts(r['box_map_points'])} |")
    return lines


def _fmt(v: Optional[float], digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _metric(r: BenchResult, key: str) -> str:
    v = (r.metrics or {}).get(key)
    return "-" if v is None or not np.isfinite(v) else f"{v:.3f}"


def to_markdown(report: BenchReport) -> str:
    """A Markdown report: one row per measured job, then skipped/failed jobs with reasons."""
    s, st = report.system, report.settings
    lines = [
        "# edgeseg bench",
        "",
        f"{s.get('os')}, {s.get('cpu_count')} CPUs, board {s.get('board')}, Python {s.get('python')}, "
        f"edgeseg {s.get('edgeseg')}. {st['runs']} timed runs after {st['warmup']} warm-up, "
        f"image {st['image'] or 'synthetic 640x480'}, threads {st['threads'] or 'backend default'}. "
        "Latency in ms (median / p90); FPS from the median total; memory: peak RSS increase while loading "
        "and running the model.",
        "",
    ]
    ok = [r for r in report.results if r.status == "ok"]
    has_map = any(r.metrics for r in ok)
    head = ["model", "backend", "size MB", "imgsz", "load s", "preprocess", "inference", "postprocess", "total",
            "FPS", "peak MB", "dets"]
    if has_map:
        head += ["mask mAP50-95", "mask mAP50", "box mAP50-95"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join("---" for _ in head) + "|")
    for r in ok:
        lat = r.latency_ms
        name = Path(r.model).name + ("" if r.origin == "file" else f" ({r.origin})")
        row = [name, r.backend, _fmt((r.size_bytes or 0) / 1e6, 1), "x".join(map(str, r.imgsz or [])) or "-",
               _fmt(r.load_s, 2)]
        row += [f"{lat[k]['median']:.1f} / {lat[k]['p90']:.1f}" for k in STAGES]
        row += [_fmt(r.fps, 1 if (r.fps or 0) >= 10 else 2), _fmt(r.peak_memory_mb, 0), str(r.detections)]
        if has_map:
            row += [_metric(r, "seg/mAP50-95"), _metric(r, "seg/mAP50"), _metric(r, "box/mAP50-95")]
        lines.append("| " + " | ".join(row) + " |")
    if not ok:
        lines.append("| " + " | ".join(["(nothing measured)"] + ["" for _ in head[1:]]) + " |")
    notes = [r for r in ok if r.note]
    if notes:
        lines += ["", "Notes:"]
        lines += [f"- {Path(r.model).name} on {r.backend}: {r.note}" for r in notes]
    other = [r for r in report.results if r.status != "ok"]
    if other:
        lines += ["", "Skipped or failed:", "", "| model | backend | status | reason |", "|---|---|---|---|"]
        for r in other:
            name = Path(r.model).name + ("" if r.origin == "file" else f" ({r.origin})")
            reason = (r.reason or "").replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {name} | {r.backend} | {r.status} | {reason} |")
    lines += _precision_markdown(precision_table(report))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # the isolated worker
    sys.exit(_worker())
