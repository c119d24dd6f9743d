"""ncnn backend: ``.param`` + ``.bin`` exports (pnnx / Ultralytics ``*_ncnn_model`` folders).

The model is a text ``.param`` graph and a ``.bin`` weight file with the same stem
(``model.ncnn.param`` + ``model.ncnn.bin``), given as the ``.param`` path or as the folder holding
them; ``metadata.yaml`` beside them carries the Ultralytics/edgeseg metadata.

ncnn has no batch dimension: a ``(1, 3, H, W)`` float32 input is fed as a ``(3, H, W)`` ``ncnn.Mat``
and each output comes back without its batch axis, which :meth:`NcnnBackend.run` restores
(``(116, N)`` -> ``(1, 116, N)``, ``(32, h, w)`` -> ``(1, 32, h, w)``). A batch larger than one is
run image by image. The numpy input and its ``ncnn.Mat`` are kept alive until every output has
been extracted (the Mat borrows the array's memory).

Input and output blob names come from the ``.param`` file: ``Input`` layers are inputs, blobs
produced but never consumed are outputs. ``.param`` files rarely state the input size, so the input
spec takes ``imgsz`` from the metadata (3 channels assumed); output shapes are probed with one
inference at load when the input size is known.

That trial inference runs in a child process: ncnn can crash (SIGFPE, SIGSEGV, an abort in
``free``) on a malformed ``.param``, and a crash there must not take the caller's process down.
A crash, a failed extraction or an empty/negative-sized output is a :class:`ModelLoadError`.
At run time an output ncnn leaves empty raises :class:`InferenceError` (``np.array`` of an empty
``ncnn.Mat`` segfaults, so it is never called on one).
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgeseg.backend import Backend, TensorSpec, ensure_file, register
from edgeseg.errors import InferenceError, InputError, ModelLoadError

PARAM_MAGIC = "7767517"

#: backend option -> ncnn ``Option`` attributes it sets
OPTIONS: Dict[str, Tuple[str, ...]] = {
    "use_vulkan_compute": ("use_vulkan_compute",),
    "use_fp16": ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic"),
    "use_bf16": ("use_bf16_storage",),
    "lightmode": ("lightmode",),
}


def resolve_files(model: Path) -> Tuple[Path, Path]:
    """(``.param``, ``.bin``) for a ``.param`` path or a folder holding exactly one ``.param``."""
    ensure_file(model, [".param + .bin (ncnn)"])
    if model.is_dir():
        params = sorted(p for p in model.iterdir() if p.suffix.lower() == ".param")
        if len(params) != 1:
            found = ", ".join(p.name for p in params) or "none"
            raise ModelLoadError(f"{model}: expected one ncnn .param file in the folder, found {found}")
        param = params[0]
    elif model.suffix.lower() == ".param":
        param = model
    else:
        raise ModelLoadError(f"{model}: expected an ncnn .param file or a folder with .param + .bin, "
                             f"found suffix {model.suffix!r}")
    weights = param.with_suffix(".bin")
    ensure_file(weights, [".bin (ncnn weights)"])
    return param, weights


def parse_param(param: Path) -> Tuple[List[Tuple[str, Optional[Tuple[int, int, int]]]], List[str]]:
    """Inputs ``[(name, (c, h, w) or None)]`` and output blob names of a text ``.param`` file."""
    try:
        lines = param.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ModelLoadError(f"{param}: expected a text ncnn .param file (binary .param.bin is not supported)") from exc
    except OSError as exc:
        raise ModelLoadError(f"{param}: cannot read: {exc}") from exc
    if not lines or lines[0].strip() != PARAM_MAGIC:
        first = lines[0].strip()[:20] if lines else "an empty file"
        raise ModelLoadError(f"{param}: not an ncnn .param file (expected magic {PARAM_MAGIC} on line 1, found {first!r})")
    inputs: List[Tuple[str, Optional[Tuple[int, int, int]]]] = []
    produced: List[str] = []
    consumed = set()
    for lineno, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        try:
            n_in, n_out = int(parts[2]), int(parts[3])
        except (IndexError, ValueError):
            raise ModelLoadError(f"{param}:{lineno}: malformed layer line {line.strip()[:80]!r}") from None
        bottoms = parts[4:4 + n_in]
        tops = parts[4 + n_in:4 + n_in + n_out]
        if len(tops) != n_out:
            raise ModelLoadError(f"{param}:{lineno}: layer {parts[1]!r} lists fewer blobs than it declares")
        consumed.update(bottoms)
        produced.extend(tops)
        if parts[0] == "Input":
            kv = dict(p.split("=", 1) for p in parts[4 + n_in + n_out:] if "=" in p)
            try:
                w, h, c = int(kv.get("0", 0)), int(kv.get("1", 0)), int(kv.get("2", 0))
            except ValueError:
                w = h = c = 0
            inputs.extend((t, (c, h, w) if w > 0 and h > 0 and c > 0 else None) for t in tops)
    outputs = [b for b in produced if b not in consumed and b not in {n for n, _ in inputs}]
    if not inputs or not outputs:
        raise ModelLoadError(f"{param}: expected at least one Input layer and one output blob, "
                             f"found {len(inputs)} inputs and {len(outputs)} outputs")
    return inputs, outputs


def _mat_problem(ret: int, mat: Any) -> str:
    """Why an extracted Mat cannot become an array ('' when it can)."""
    if ret != 0:
        return f"could not be extracted (ncnn code {ret})"
    if mat.empty():
        return "came back empty"
    dims = [mat.c, mat.h, mat.w][3 - mat.dims:] if 1 <= mat.dims <= 3 else [mat.c, mat.d, mat.h, mat.w]
    if any(d <= 0 for d in dims):
        return f"has an impossible shape {tuple(dims)}"
    return ""


# The trial inference, run by a fresh interpreter: only numpy and ncnn, nothing from the caller.
_TRIAL = r"""
import json, sys
import numpy as np
import ncnn
param, weights, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
def fail(msg):
    print(json.dumps({"error": msg})); sys.stdout.flush(); sys.exit(0)
net = ncnn.Net()
net.opt.num_threads = 1
for attr, value in spec["opt"].items():
    setattr(net.opt, attr, value)
if net.load_param(param) != 0 or net.load_model(weights) != 0:
    fail("ncnn could not load the .param/.bin pair")
arrays = [np.zeros(shape, np.float32) for shape in spec["inputs"].values()]
mats = [ncnn.Mat(a) for a in arrays]
shapes = {}
ex = net.create_extractor()
for name, m in zip(spec["inputs"], mats):
    if ex.input(name, m) != 0:
        fail("ncnn did not take input %r" % name)
for name in spec["outputs"]:
    ret, mat = ex.extract(name)
    if ret != 0 or mat.empty():
        fail("output %r could not be extracted (ncnn code %d, empty=%s)" % (name, ret, mat.empty()))
    dims = [mat.c, mat.h, mat.w][3 - mat.dims:] if 1 <= mat.dims <= 3 else [mat.c, mat.d, mat.h, mat.w]
    if any(d <= 0 for d in dims):
        fail("output %r has an impossible shape %s" % (name, tuple(dims)))
    shapes[name] = dims
    del mat
del ex, mats, arrays
net.clear()
print(json.dumps({"shapes": shapes}))
"""

#: seconds the child process may take for the trial inference
TRIAL_TIMEOUT_S = 120.0


def trial_inference(param: Path, weights: Path, inputs: Sequence[TensorSpec], outputs: Sequence[str],
                    opt: Dict[str, bool]) -> Dict[str, List[int]]:
    """Run one inference on zeros in a child process; output shapes (without batch) by name.

    Raises :class:`ModelLoadError` when ncnn crashes (the signal is named), times out, or cannot
    produce every output."""
    spec = {"inputs": {s.name: list(s.shape[1:]) for s in inputs}, "outputs": list(outputs), "opt": opt}
    try:
        proc = subprocess.run([sys.executable, "-c", _TRIAL, str(param), str(weights), json.dumps(spec)],
                              capture_output=True, text=True, timeout=TRIAL_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise ModelLoadError(f"{param}: ncnn's trial inference did not finish in {TRIAL_TIMEOUT_S:g} s") from exc
    except OSError as exc:
        raise ModelLoadError(f"{param}: cannot start the child process for ncnn's trial inference: {exc}") from exc
    said = " ".join((proc.stderr or "").split())[-300:]
    if proc.returncode < 0:
        try:
            sig = signal.Signals(-proc.returncode).name
        except ValueError:
            sig = f"signal {-proc.returncode}"
        raise ModelLoadError(f"{param}: ncnn crashed ({sig}) in a trial inference on zeros (run in a child "
                             f"process, so this process is unharmed); the .param graph is malformed"
                             + (f". ncnn said: {said}" if said else ""))
    try:
        result = json.loads((proc.stdout or "").strip().splitlines()[-1])
    except (ValueError, IndexError):
        result = {}
    if proc.returncode != 0 or "shapes" not in result:
        why = result.get("error") or said or f"exit status {proc.returncode}"
        raise ModelLoadError(f"{param}: ncnn's trial inference on zeros failed: {why}")
    return {k: [int(d) for d in v] for k, v in result["shapes"].items()}


@register
class NcnnBackend(Backend):
    """Tencent ncnn (CPU, or Vulkan GPU with ``use_vulkan_compute=True``)."""

    name = "ncnn"
    suffixes = (".param",)
    requires = ("ncnn",)
    extra = "ncnn"
    priority = 40
    format = "ncnn"

    def __init__(self, model: Path, *, threads: Optional[int] = None, probe: bool = True, **options: Any) -> None:
        model = Path(model)
        unknown = set(options) - set(OPTIONS)
        if unknown:
            raise InputError(f"ncnn backend: unknown options {sorted(unknown)}; expected {', '.join(OPTIONS)}")
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise InputError(f"threads must be a positive integer, found {threads!r}")
        try:
            import ncnn
        except ImportError as exc:
            raise self.unavailable() from exc
        from edgeseg.metadata import parse_value, read_sidecar

        self.param_path, self.bin_path = resolve_files(model)
        specs, out_names = parse_param(self.param_path)
        self.metadata: Dict[str, Any] = read_sidecar(self.param_path)
        self.threads = threads
        self.options = dict(options)
        net = ncnn.Net()
        if threads is not None:
            net.opt.num_threads = int(threads)
        for key, value in options.items():
            for attr in OPTIONS[key]:
                setattr(net.opt, attr, bool(value))
        if net.load_param(str(self.param_path)) != 0:
            raise ModelLoadError(f"{self.param_path}: ncnn could not parse the .param file (see ncnn's message above)")
        if net.load_model(str(self.bin_path)) != 0:
            raise ModelLoadError(f"{self.bin_path}: ncnn could not load the weights; the .bin file is truncated "
                                 f"or does not belong to {self.param_path.name}")
        self._net: Any = net
        self._ncnn = ncnn
        imgsz = parse_value(self.metadata.get("imgsz")) if "imgsz" in self.metadata else None
        if isinstance(imgsz, int):
            imgsz = [imgsz, imgsz]
        self.inputs = []
        for name, chw in specs:
            if chw is None and isinstance(imgsz, (list, tuple)) and len(imgsz) == 2:
                chw = (3, int(imgsz[0]), int(imgsz[1]))
            shape = (1,) + tuple(chw) if chw else (1, 3, None, None)
            self.inputs.append(TensorSpec(name, shape, np.dtype(np.float32)))
        self.outputs = [TensorSpec(n, (), np.dtype(np.float32)) for n in out_names]
        if probe and all(None not in s.shape for s in self.inputs):
            shapes = trial_inference(self.param_path, self.bin_path, self.inputs, out_names,
                                     {attr: bool(v) for k, v in options.items() for attr in OPTIONS[k]})
            self.outputs = [TensorSpec(n, (1,) + tuple(shapes[n]), np.dtype(np.float32)) for n in out_names]

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """``feeds``: name -> float32 (B, C, H, W); returns name -> float32 with the batch axis restored."""
        if self._net is None:
            raise InputError("ncnn backend is closed")
        missing = [s.name for s in self.inputs if s.name not in feeds]
        if missing:
            raise InputError(f"ncnn: missing inputs {missing}; expected {[s.name for s in self.inputs]}")
        batch = None
        for s in self.inputs:
            x = feeds[s.name]
            if not isinstance(x, np.ndarray) or x.ndim != 4:
                raise InputError(f"ncnn input {s.name!r}: expected a (B, C, H, W) array, found "
                                 f"{getattr(x, 'shape', type(x).__name__)}")
            if batch is not None and x.shape[0] != batch:
                raise InputError(f"ncnn inputs disagree on the batch size: {batch} and {x.shape[0]}")
            batch = x.shape[0]
        per_image: List[Dict[str, np.ndarray]] = []
        for b in range(batch or 0):
            # keep the arrays and Mats referenced until every output is extracted
            arrays = [np.ascontiguousarray(feeds[s.name][b], dtype=np.float32) for s in self.inputs]
            mats = [self._ncnn.Mat(a) for a in arrays]
            out: Dict[str, np.ndarray] = {}
            with self._net.create_extractor() as ex:
                for s, m in zip(self.inputs, mats):
                    if ex.input(s.name, m) != 0:
                        raise InputError(f"ncnn could not take input {s.name!r}")
                for o in self.outputs:
                    ret, mat = ex.extract(o.name)
                    problem = _mat_problem(ret, mat)
                    if problem:
                        raise InferenceError(f"{self.param_path.name}: ncnn output {o.name!r} {problem}")
                    out[o.name] = np.array(mat, dtype=np.float32, copy=True)[None]
            del mats, arrays
            per_image.append(out)
        return {o.name: np.concatenate([p[o.name] for p in per_image], axis=0) for o in self.outputs}

    def close(self) -> None:
        net, self._net = getattr(self, "_net", None), None
        if net is not None:
            net.clear()

    def describe(self) -> Dict[str, Any]:
        return {"param": str(self.param_path), "bin": str(self.bin_path), "threads": self.threads, **self.options}
