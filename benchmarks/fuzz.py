"""Fuzz edgeseg's readers of untrusted files: checkpoints, ONNX, TFLite, ncnn models and images.

    python benchmarks/fuzz.py [--cases 2000] [--seed 0] [--formats checkpoint,onnx,tflite,ncnn,image]
                              [--timeout 60] [--mem-gb 4] [--keep DIR]

Each case is a mutated copy of a real file from ../shared/assets (or a hand-written ncnn model):
bit flips, truncations, zeroed and overwritten regions, duplicated chunks, swapped headers, plus
hostile pickles (code-execution payloads, TorchScript) for checkpoints and bombs (pickle memo and
length bombs, copy bombs, forged zip sizes, exploding module trees and architectures, image
headers declaring gigapixels, a real 144 MP PNG bomb). Cases run in worker processes limited to
``--mem-gb`` of address space (RLIMIT_AS); a case must end, within ``--timeout`` seconds, in a
clean result or an edgeseg error. Anything else is a failure: a raw exception (``RAW:...``), a
signal (``crash:SIG...``), a timeout (``hang``) or a payload that ran (``EXECUTED``).

Prints the counts by format and outcome and exits 1 when any case failed. Every case is
reproducible from (format, mutation, seed); ``--keep DIR`` keeps the case files.
The fast fuzz test (tests/test_fuzz.py) runs this harness with a few hundred cases.
"""
from __future__ import annotations

import argparse
import collections
import io
import json
import os
import pickle
import random
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"
MODELS = ASSETS / "models"
IMAGES = ASSETS / "images"

BASES = {
    "checkpoint": MODELS / "yolov8n-seg-coco.pt",
    "onnx": MODELS / "yolov8n-seg-320-int8dyn.onnx",
    "tflite": MODELS / "yolov8n-seg-640-int8w.tflite",
    "image": IMAGES / "bus.jpg",
}
FORMATS = ("checkpoint", "onnx", "tflite", "ncnn", "image")
GENERIC = ("bitflip", "truncate", "zero", "overwrite", "duplicate", "swap_header")
MUTATIONS: Dict[str, Tuple[str, ...]] = {
    "checkpoint": GENERIC + ("pickle", "hostile", "bomb"),
    "onnx": GENERIC,
    "tflite": GENERIC,
    "ncnn": GENERIC + ("param_token",),
    "image": GENERIC + ("bomb",),
}
BAD_OUTCOMES = ("RAW:", "crash:", "hang", "EXECUTED")
MARK = b"@@fuzz "  # prefix of the worker's result lines (vendor libraries may print too)

# a small ncnn graph with the layer kinds a YOLO export uses (conv, split, pooling, interp, concat, reshape)
NCNN_PARAM = """7767517
7 9
Input            in0      0 1 in0 0=8 1=8 2=3
Convolution      conv0    1 1 in0 c0 0=4 1=1 5=1 6=12
Split            split0   1 3 c0 c1 c2 c3
Pooling          pool0    1 1 c1 p0 0=0 1=2 2=2
Interp           up0      1 1 p0 u0 0=1 1=2.000000e+00 2=2.000000e+00
Concat           cat0     2 1 u0 c2 out1
Reshape          flat     1 1 c3 out0 0=64 1=4
"""
NCNN_VALUES = ("-100", "-5", "-1", "0", "1", "2", "3", "7", "65536", "2147483647", "-2147483648", "1e30", "x")


# --------------------------------------------------------------------------- generic mutations


def _pos(rng: random.Random, n: int, head: int = 256 << 10) -> int:
    """A position, half the time among the first ``head`` bytes (headers, pickles, graphs)."""
    return rng.randrange(min(n, head)) if rng.random() < 0.5 else rng.randrange(n)


def mutate(data: bytes, how: str, rng: random.Random, others: List[bytes]) -> bytes:
    d = bytearray(data)
    n = len(d)
    if n == 0:
        return bytes(d)
    if how == "bitflip":
        for _ in range(rng.choice((1, 1, 2, 4, 8, 32))):
            d[_pos(rng, n)] ^= 1 << rng.randrange(8)
    elif how == "truncate":
        cut = rng.choice((rng.randrange(1, 65), rng.randrange(n), int(n * rng.random() ** 0.2)))
        del d[cut:]
    elif how in ("zero", "overwrite"):
        a = _pos(rng, n)
        length = min(rng.choice((1, 4, 16, 256, 4096, 65536, n // 4)), n - a) or 1
        d[a:a + length] = bytes(length) if how == "zero" else rng.randbytes(length)
    elif how == "duplicate":
        a = _pos(rng, n)
        chunk = d[a:a + rng.choice((4, 64, 1024, 65536))]
        b = _pos(rng, n)
        d[b:b] = chunk * rng.choice((1, 2, 16))
    elif how == "swap_header":
        other = rng.choice(others)
        k = min(rng.choice((4, 8, 16, 64, 512)), n, len(other))
        d[:k] = other[:k]
    else:
        raise ValueError(how)
    return bytes(d)


# --------------------------------------------------------------------------- checkpoints


def _rezip(src: bytes, edit: Callable[[str, bytes], Optional[bytes]]) -> bytes:
    """The zip ``src`` with each record passed through ``edit`` (None keeps it), re-written with valid CRCs."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(src)) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            new = edit(info.filename, data)
            zout.writestr(info.filename, data if new is None else new)
    return out.getvalue()


def _archive(records: Dict[str, bytes], compress: int = zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compress) as z:
        for name, data in records.items():
            z.writestr(name, data)
    return out.getvalue()


class _Call:
    """Pickles as ``func(*args)`` (func may itself be a _Call): the shape of every pickle exploit."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __call__(self, *a: Any) -> None:  # pickle wants the reduce callable to be callable
        raise RuntimeError("never called")

    def __reduce__(self) -> Tuple[Any, Tuple[Any, ...]]:
        return self.func, self.args


def _hostile_payloads(sentinel: Path, work: Path) -> List[Tuple[str, bytes]]:
    """(name, checkpoint bytes) whose loading with a plain unpickler/torch.load would touch ``sentinel``."""
    import builtins
    import importlib
    import runpy

    s = str(sentinel)
    touch = f"open({s!r}, 'w').close()"
    script = work / "payload.py"
    script.write_text(touch + "\n")
    inner = pickle.dumps(_Call(os.system, f"touch {s}"), protocol=2)
    np_evil = work / "evil.npy"
    np_evil.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", 118) + (
        "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }".ljust(117) + "\n").encode() + inner)
    payloads = {
        "os.system": _Call(os.system, f"touch {s}"),
        "eval": _Call(builtins.eval, touch),
        "exec": _Call(builtins.exec, touch),
        "getattr-import": _Call(_Call(getattr, _Call(builtins.__import__, "os"), "system"), f"touch {s}"),
        "importlib": _Call(_Call(getattr, _Call(importlib.import_module, "os"), "system"), f"touch {s}"),
        "subprocess": _Call(subprocess.call, ["touch", s]),
        "runpy": _Call(runpy.run_path, str(script)),
        "pickle.loads": _Call(pickle.loads, inner),
    }
    out = []
    for name, obj in payloads.items():
        pkl = pickle.dumps({"model": obj, "ema": None}, protocol=2)
        out.append((name, _archive({"a/data.pkl": pkl, "a/byteorder": b"little"})))
    # globals named by module/name, without importing them here
    for name, mod, fn, arg in (("torch.load", "torch", "load", str(work / "legacy.pt")),
                               ("numpy.load", "numpy", "load", str(np_evil))):
        pkl = (b"\x80\x02}q\x00(X\x05\x00\x00\x00modelq\x01c" + f"{mod}\n{fn}\n".encode() + b"q\x02X"
               + struct.pack("<I", len(arg)) + arg.encode() + b"\x85R" + b"u.")
        out.append((name, _archive({"a/data.pkl": pkl})))
    (work / "legacy.pt").write_bytes(b"\x80\x02" + inner[2:])
    out.append(("legacy", inner))  # a bare (pre-zip) pickle
    tar = io.BytesIO()
    import tarfile

    with tarfile.open(fileobj=tar, mode="w") as t:
        info = tarfile.TarInfo("pickle")
        info.size = len(inner)
        t.addfile(info, io.BytesIO(inner))
    out.append(("tar", tar.getvalue()))
    png = (IMAGES / "bus.jpg").read_bytes()[:4096] if (IMAGES / "bus.jpg").exists() else b"\x89PNG" + bytes(64)
    out.append(("zip-polyglot", png + _archive({"a/data.pkl": pickle.dumps({"model": payloads["os.system"]}, 2)})))
    ts = _torchscript(sentinel, work)
    if ts is not None:
        out.append(("torchscript", ts))
    return out


def _torchscript(sentinel: Path, work: Path) -> Optional[bytes]:
    """A real TorchScript archive whose __setstate__ writes ``sentinel`` when torch.jit.load runs it."""
    code = f"""
import torch
class M(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.path = {str(sentinel)!r}
        self.n = 0
    @torch.jit.export
    def __getstate__(self):
        return (self.path, self.training)
    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]):
        self.path = state[0]
        self.training = state[1]
        t = torch.from_file(self.path, shared=True, size=4, dtype=torch.uint8)
        t.fill_(65)
        self.n = int(t.sum())
    def forward(self, x):
        return x
torch.jit.save(torch.jit.script(M()), {str(work / "ts.pt")!r})
"""
    src = work / "make_ts.py"
    src.write_text(code)
    try:
        subprocess.run([sys.executable, str(src)], check=True, capture_output=True, timeout=300)
    except (subprocess.SubprocessError, OSError):
        return None
    return (work / "ts.pt").read_bytes()


def _fake_ultralytics(arch: Any, modules: Any = None, names: Any = None) -> bytes:
    """A checkpoint pickling ``ultralytics.nn.tasks.SegmentationModel`` with the given attributes."""
    import types

    mod = types.ModuleType("ultralytics.nn.tasks")
    cls = type("SegmentationModel", (), {"__module__": "ultralytics.nn.tasks"})
    mod.SegmentationModel = cls
    saved = {k: sys.modules.get(k) for k in ("ultralytics", "ultralytics.nn", "ultralytics.nn.tasks")}
    sys.modules.update({"ultralytics": types.ModuleType("ultralytics"), "ultralytics.nn": types.ModuleType("ultralytics.nn"),
                        "ultralytics.nn.tasks": mod})
    try:
        obj = cls()
        obj.__dict__.update(yaml=arch, names={0: "a"} if names is None else names, _parameters={}, _buffers={})
        kids = modules(cls, obj) if callable(modules) else {}
        obj.__dict__["_modules"] = kids
        pkl = pickle.dumps({"model": obj, "ema": None}, protocol=2)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return _archive({"a/data.pkl": pkl, "a/byteorder": b"little"})


def _checkpoint_bombs(rng: random.Random) -> List[Tuple[str, bytes]]:
    from edgeseg.converters.arch import architecture

    P = b"\x80\x02"
    arch = architecture("yolov8-seg", "n", 1)

    def with_(**kw: Any) -> dict:
        a = json.loads(json.dumps(arch))
        for k, v in kw.items():
            if k == "depth":
                a["scales"]["n"][0] = v
            elif k == "width":
                a["scales"]["n"][1] = v
            else:
                a[k] = v
        return a

    def cycle(cls: Any, root: Any) -> dict:
        child = cls()
        child.__dict__.update(_modules={"back": root}, _parameters={}, _buffers={})
        return {"model": child}

    def dag(cls: Any, root: Any) -> dict:
        node = None
        for _ in range(40):
            nxt = cls()
            nxt.__dict__.update(_modules={"a": node, "b": node} if node else {}, _parameters={}, _buffers={})
            node = nxt
        return {"model": node}

    storage = _storage_pickle(10 ** 12)
    forged = bytearray(_archive({"a/data.pkl": _storage_pickle(1 << 28), "a/data/0": bytes(1 << 16)}, zipfile.ZIP_DEFLATED))
    cd = forged.rfind(b"PK\x01\x02")  # central directory entry of a/data/0 (the last one)
    forged[cd + 24:cd + 28] = struct.pack("<I", 3_000_000_000)
    copy_bomb = P + b"]q\x00(" + b"K\x01" * 1000 + b"e" + b"c__builtin__\ntuple\nq\x01" + b"h\x01h\x00\x85R0" * 60_000 + b"N."
    bombs = [
        ("memo", _archive({"a/data.pkl": P + b"}r" + struct.pack("<I", 1_000_000_000) + b"."})),
        ("bytes-length", _archive({"a/data.pkl": P + b"B" + struct.pack("<I", 2_000_000_000) + b"abc."})),
        ("copy-bomb", _archive({"a/data.pkl": copy_bomb})),
        ("storage-numel", _archive({"a/data.pkl": storage, "a/data/0": bytes(16)})),
        ("forged-deflate-3GB", bytes(forged)),
        ("modules-cycle", _fake_ultralytics(arch, cycle)),
        ("modules-dag-2^40", _fake_ultralytics(arch, dag)),
        ("nc=1e7", _fake_ultralytics(with_(nc=10_000_000))),
        ("nc=-5", _fake_ultralytics(with_(nc=-5))),
        ("depth-x1e6", _fake_ultralytics(with_(depth=0.33e6))),
        ("width-x1000", _fake_ultralytics(with_(width=250.0))),
        ("names-not-strings", _fake_ultralytics(arch, names=[[1, 2]])),
        ("deep-nesting", _archive({"a/data.pkl": P + b"]" * 200_000 + b"a" * 199_999 + b"."})),
    ]
    return bombs


def _storage_pickle(numel: int) -> bytes:
    pid = (b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nq\x00X\x01\x00\x00\x000X\x03\x00\x00\x00cpu"
           + b"\x8a\x08" + struct.pack("<q", numel) + b"tQ")
    return (b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n(" + pid + b"K\x00\x8a\x08"
            + struct.pack("<q", numel) + b"\x85K\x01\x85\x89ctorch\nOrderedDict\n)Rtbs.")


# --------------------------------------------------------------------------- images


def _png(w: int, h: int, rows: Optional[int] = None) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    z = zlib.compressobj(9)
    row = bytes(w + 1)
    idat = b"".join(z.compress(row) for _ in range(h if rows is None else rows)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def _image_bases() -> List[bytes]:
    import cv2
    import numpy as np

    img = cv2.imread(str(BASES["image"])) if BASES["image"].exists() else np.zeros((48, 64, 3), np.uint8)
    small = cv2.resize(img, (64, 48))
    out = [BASES["image"].read_bytes()] if BASES["image"].exists() else []
    for ext in (".png", ".bmp", ".tif", ".webp", ".gif", ".ppm", ".jp2"):
        ok, buf = cv2.imencode(ext, small)
        if ok:
            out.append(buf.tobytes())
    ok, buf = cv2.imencode(".tif", small.astype(np.float32))
    if ok:
        out.append(buf.tobytes())
    return out


def _image_bombs(work: Path) -> List[Tuple[str, bytes]]:
    import numpy as np

    real = work / "png-bomb-144MP.png"
    if not real.exists():
        real.write_bytes(_png(12_000, 12_000))
    jpeg = bytearray(_image_bases()[0])
    i = next(i for i in range(2, len(jpeg) - 1) if jpeg[i] == 0xFF and jpeg[i + 1] in (0xC0, 0xC2))
    jpeg[i + 5:i + 9] = struct.pack(">HH", 60_000, 60_000)
    bmp = b"BM" + bytes(12) + struct.pack("<IiiHH", 40, 100_000, 100_000, 1, 24) + bytes(24)
    gif = b"GIF89a" + struct.pack("<HH", 65535, 65535) + bytes(16)
    webp = b"RIFF" + struct.pack("<I", 30) + b"WEBPVP8X" + struct.pack("<I", 10) + bytes(4) + (16383).to_bytes(3, "little") * 2
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 2) + struct.pack("<HHII", 256, 4, 1, 10 ** 6) + \
        struct.pack("<HHII", 257, 4, 1, 10 ** 6) + bytes(4)
    del np
    return [("png-144MP", real.read_bytes()), ("png-header-2^21", _png(1 << 21, 1 << 21, rows=1)),
            ("jpeg-header-60000", bytes(jpeg)), ("bmp-header", bmp), ("gif-header", gif), ("webp-header", webp),
            ("tiff-header", tiff)]


# --------------------------------------------------------------------------- case files


def _ncnn_bin() -> bytes:
    import numpy as np

    rng = np.random.default_rng(0)
    return struct.pack("<I", 0) + rng.standard_normal(12).astype(np.float32).tobytes() + \
        rng.standard_normal(4).astype(np.float32).tobytes()


def _param_token(param: str, rng: random.Random) -> str:
    lines = param.splitlines()
    i = rng.randrange(1, len(lines))
    toks = lines[i].split()
    if not toks:
        return param
    j = rng.randrange(len(toks))
    if "=" in toks[j] and rng.random() < 0.8:
        k = toks[j].split("=", 1)[0]
        toks[j] = f"{k}={rng.choice(NCNN_VALUES)}"
    elif rng.random() < 0.5:
        toks[j] = rng.choice(NCNN_VALUES)
    else:
        toks[j] = rng.choice(("Convolution", "Pooling", "Split", "Concat", "Interp", "Reshape", "Crop", "Padding",
                              "Slice", "Permute", "Softmax", "Deconvolution", "Noop", "Eltwise"))
    lines[i] = " ".join(toks)
    return "\n".join(lines) + "\n"


class CaseMaker:
    """Writes the file of a case (format, mutation, seed) under ``work``; deterministic."""

    def __init__(self, fmt: str, work: Path) -> None:
        self.fmt, self.work = fmt, work
        self.sentinel = work / "PAYLOAD_RAN"
        self._extra: Dict[str, List[Tuple[str, bytes]]] = {}
        others = [p.read_bytes()[:512] for p in BASES.values() if p.exists()] + [NCNN_PARAM.encode()]
        self.others = others or [b"\x00" * 64]
        if fmt == "ncnn":
            self.base = [NCNN_PARAM.encode(), _ncnn_bin()]
        elif fmt == "image":
            self.base = _image_bases()
        else:
            self.base = [BASES[fmt].read_bytes()]

    def extra(self, kind: str) -> List[Tuple[str, bytes]]:
        if kind not in self._extra:
            self._extra[kind] = {"hostile": lambda: _hostile_payloads(self.sentinel, self.work),
                                 "bomb": lambda: _checkpoint_bombs(random.Random(0)) if self.fmt == "checkpoint"
                                 else _image_bombs(self.work)}[kind]()
        return self._extra[kind]

    def make(self, cid: int, mutation: str, seed: int) -> Tuple[Path, str]:
        rng = random.Random(seed)
        suffix = {"checkpoint": ".pt", "onnx": ".onnx", "tflite": ".tflite", "image": ".jpg"}.get(self.fmt, "")
        if mutation in ("hostile", "bomb"):
            items = self.extra(mutation)
            name, data = items[seed % len(items)]
            path = self.work / f"case{cid}-{mutation}-{name}{suffix}"
            path.write_bytes(data)
            return path, name
        if self.fmt == "ncnn":
            folder = self.work / f"case{cid}_ncnn_model"
            folder.mkdir(exist_ok=True)
            param, weights = self.base
            which = rng.choice(("param", "param", "bin"))
            if mutation == "param_token":
                param = _param_token(param.decode(), rng).encode()
            elif which == "param":
                param = mutate(param, mutation, rng, self.others)
            else:
                weights = mutate(weights, mutation, rng, self.others)
            (folder / "model.ncnn.param").write_bytes(param)
            (folder / "model.ncnn.bin").write_bytes(weights)
            return folder, which if mutation != "param_token" else "param"
        base = self.base[seed % len(self.base)]
        if mutation == "pickle":  # mutate data.pkl, keep the zip valid (CRCs), so the unpickler sees it
            how = rng.choice(("bitflip", "bitflip", "zero", "overwrite", "duplicate", "truncate"))
            data = _rezip(base, lambda n, d: mutate(d, how, rng, self.others) if n.endswith("data.pkl") else None)
            detail = how
        else:
            data, detail = mutate(base, mutation, rng, self.others), ""
        path = self.work / f"case{cid}-{mutation}{suffix}"
        path.write_bytes(data)
        return path, detail


# --------------------------------------------------------------------------- worker (one process per format)


def _runner(fmt: str) -> Callable[[Path], None]:
    """The call a user makes with such a file; returns normally for a clean result."""
    if fmt == "checkpoint":
        from edgeseg.converters.checkpoint import load_model

        def load(p: Path) -> None:
            load_model(p)

        return load
    if fmt in ("onnx", "tflite"):
        import numpy as np

        from edgeseg import Runtime

        img = np.zeros((96, 128, 3), np.uint8)
        img[20:70, 30:90] = 200

        def run_model(p: Path) -> None:
            with Runtime(p, threads=1) as rt:
                rt(img)

        return run_model
    if fmt == "ncnn":
        import numpy as np

        from edgeseg.runtimes.ncnn import NcnnBackend

        def run_ncnn(p: Path) -> None:
            be = NcnnBackend(p, threads=1)
            try:
                if all(None not in s.shape for s in be.inputs):
                    be.run({s.name: np.zeros(s.shape, np.float32) for s in be.inputs})
            finally:
                be.close()

        return run_ncnn
    if fmt == "image":
        from edgeseg.io import read_image

        def read(p: Path) -> None:
            read_image(p)

        return read
    raise ValueError(fmt)


def worker(fmt: str, work: Path, mem_gb: float) -> None:
    """Reads ``id mutation seed`` lines on stdin; prints ``{"start": id}`` then ``{"id", "outcome", ...}``."""
    import resource
    import warnings

    if mem_gb > 0:
        limit = int(mem_gb * (1 << 30))
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    warnings.simplefilter("ignore")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out = os.fdopen(os.dup(1), "wb", buffering=0)

    def say(msg: Dict[str, Any]) -> None:
        out.write(MARK + json.dumps(msg).encode() + b"\n")

    maker = CaseMaker(fmt, work)
    run = _runner(fmt)
    from edgeseg.errors import EdgesegError

    for line in sys.stdin:
        cid_s, mutation, seed_s = line.split()
        cid, seed = int(cid_s), int(seed_s)
        say({"start": cid})
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = time.perf_counter()
        try:
            path, detail = maker.make(cid, mutation, seed)
        except Exception as exc:  # a generator problem, not an edgeseg result
            say({"id": cid, "outcome": f"skip:{type(exc).__name__}", "detail": str(exc)[:200]})
            continue
        try:
            run(path)
            outcome, msg = "ok", ""
        except EdgesegError as exc:
            outcome, msg = f"error:{type(exc).__name__}", str(exc)
        except Exception as exc:  # noqa: BLE001 - the point: anything else is a finding
            outcome, msg = f"RAW:{type(exc).__name__}", str(exc)
        if maker.sentinel.exists():
            outcome = "EXECUTED"
            maker.sentinel.unlink()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        say({"id": cid, "outcome": outcome, "detail": detail, "msg": msg[:240], "s": round(time.perf_counter() - t, 3),
             "rss_mb": rss // 1024, "rss_growth_mb": (rss - rss0) // 1024})


# --------------------------------------------------------------------------- parent


def plan(counts: Dict[str, int], seed: int) -> Dict[str, List[Tuple[int, str, int]]]:
    """``counts[format]`` cases per format, cycling through its mutation classes (hostile pickles
    and bombs take their payloads in turn): {format: [(id, mutation, seed)]}."""
    rng = random.Random(seed)
    out: Dict[str, List[Tuple[int, str, int]]] = {}
    cid = 0
    for fmt, n in counts.items():
        muts = MUTATIONS[fmt]
        rows = []
        for i in range(n):
            m = muts[i % len(muts)]
            rows.append((cid, m, i // len(muts) if m in ("hostile", "bomb") else rng.randrange(1 << 30)))
            cid += 1
        out[fmt] = rows
    return out


def run_format(fmt: str, rows: List[Tuple[int, str, int]], work: Path, timeout: float, mem_gb: float,
               log: Callable[[str], None] = lambda s: None) -> List[Dict[str, Any]]:
    """Run the cases of one format in worker processes (restarted after a crash or a hang)."""
    results: List[Dict[str, Any]] = []
    todo = list(rows)
    by_id = {r[0]: r for r in rows}
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    while todo:
        with tempfile.TemporaryFile("w+") as feed:
            feed.write("".join(f"{c} {m} {s}\n" for c, m, s in todo))
            feed.seek(0)
            proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", fmt, "--work", str(work),
                                     "--mem-gb", str(mem_gb)], stdin=feed, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, env=env, start_new_session=True, bufsize=0)
        assert proc.stdout
        fd = proc.stdout.fileno()
        current: Optional[int] = None
        started = time.monotonic()
        first = True
        buf = b""
        while True:
            if b"\n" not in buf:
                # the first case also pays for importing the vendor libraries
                limit = timeout + (180 if first else 0)
                ready, _, _ = select.select([fd], [], [], max(0.0, started + limit - time.monotonic()))
                if not ready:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    if current is not None:
                        results.append({"id": current, "format": fmt, "mutation": by_id[current][1], "outcome": "hang",
                                        "detail": f"no result in {timeout:g} s"})
                        todo = [r for r in todo if r[0] != current]
                    break
                chunk = os.read(fd, 1 << 16)
                if chunk:
                    buf += chunk
                    continue
                code = proc.wait()
                if current is not None:
                    name = signal.Signals(-code).name if code < 0 else f"exit {code}"
                    results.append({"id": current, "format": fmt, "mutation": by_id[current][1],
                                    "outcome": f"crash:{name}", "detail": ""})
                    todo = [r for r in todo if r[0] != current]
                elif code != 0 and todo:
                    raise RuntimeError(f"{fmt} worker failed to start (exit {code})")
                break
            line, buf = buf.split(b"\n", 1)
            if not line.startswith(MARK):
                continue  # a vendor library printing to stdout
            msg = json.loads(line[len(MARK):])
            if "start" in msg:
                current, started = msg["start"], time.monotonic()
                continue
            first = False
            msg.update(format=fmt, mutation=by_id[msg["id"]][1])
            results.append(msg)
            todo = [r for r in todo if r[0] != msg["id"]]
            current = None
            log(f"{fmt:10s} {msg['mutation']:12s} {msg['outcome']}")
        proc.stdout.close()
    return results


def summarize(results: List[Dict[str, Any]]) -> str:
    table: Dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for r in results:
        kind = r["outcome"].split(":")[0] if not r["outcome"].startswith(BAD_OUTCOMES) else r["outcome"]
        table[r["format"]][kind] += 1
    cols = sorted({k for c in table.values() for k in c}, key=lambda k: (k.startswith(BAD_OUTCOMES), k))
    w = {c: max(len(c), 5) + 2 for c in cols}
    lines = [f"{'format':12s}" + "".join(f"{c:>{w[c]}s}" for c in cols) + f"{'total':>8s}"]
    for fmt in FORMATS:
        if fmt in table:
            lines.append(f"{fmt:12s}" + "".join(f"{table[fmt][c]:>{w[c]}d}" for c in cols)
                         + f"{sum(table[fmt].values()):>8d}")
    errors = collections.Counter(r["outcome"].split(":", 1)[1] for r in results if r["outcome"].startswith("error:"))
    lines.append("edgeseg errors: " + ", ".join(f"{k} {v}" for k, v in errors.most_common()))
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=400, help="cases per format (default 400)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds one case may take (default 60)")
    ap.add_argument("--mem-gb", type=float, default=4.0, help="address-space limit of the workers (default 4)")
    ap.add_argument("--keep", type=Path, help="keep the case files in this folder")
    ap.add_argument("--json", type=Path, help="write every case's result here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        worker(a.worker, a.work, a.mem_gb)
        return 0
    formats = [f for f in a.formats.split(",") if f]
    missing = [f for f in formats if f in BASES and not BASES[f].exists()]
    if missing:
        print(f"test assets for {', '.join(missing)} not found under {ASSETS}", file=sys.stderr)
        return 2
    work = a.keep or Path(tempfile.mkdtemp(prefix="edgeseg-fuzz-"))
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    results: List[Dict[str, Any]] = []
    try:
        for fmt, rows in plan({f: a.cases for f in formats}, a.seed).items():
            sub = work / fmt
            sub.mkdir(exist_ok=True)
            results += run_format(fmt, rows, sub, a.timeout, a.mem_gb)
            print(f"{fmt}: {len(rows)} cases done ({time.perf_counter() - t:.0f} s)", flush=True)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{len(results)} cases, seed {a.seed}, {time.perf_counter() - t:.0f} s, "
          f"address space limit {a.mem_gb:g} GB, timeout {a.timeout:g} s per case")
    print(summarize(results))
    bad = [r for r in results if r["outcome"].startswith(BAD_OUTCOMES)]
    for r in bad[:30]:
        print(f"FAILED {r['format']} {r['mutation']} case {r['id']}: {r['outcome']} {r.get('detail', '')} {r.get('msg', '')}")
    peak = max((r.get("rss_mb", 0) for r in results), default=0)
    print(f"peak worker RSS {peak} MB")
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
