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
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from edgeseg.backend import Backend, TensorSpec, ensure_file, register
from edgeseg.errors import InputError, ModelLoadError

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
            try:
                got = self.run({s.name: np.zeros(s.shape, np.float32) for s in self.inputs})
            except Exception as exc:  # a graph that cannot run is a load error, with ncnn's reason
                raise ModelLoadError(f"{self.param_path}: a trial inference failed: {exc}") from exc
            self.outputs = [TensorSpec(n, tuple(got[n].shape), np.dtype(np.float32)) for n in out_names]

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
                    if ret != 0:
                        raise ModelLoadError(f"ncnn: extracting output {o.name!r} failed (code {ret})")
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
