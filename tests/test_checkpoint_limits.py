"""Checkpoints crafted to exhaust memory or time end in a ModelLoadError, fast, before allocating:
pickle memo/length bombs, storages larger than their records, deflate bombs, container-copy bombs,
``_modules`` cycles and exploding DAGs, architecture values out of bounds, malformed class names."""
from __future__ import annotations

import json
import struct
import sys
import time
import types
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the converters need torch: pip install 'edgeseg[convert]'")

from edgeseg.converters import unpickle  # noqa: E402
from edgeseg.converters.arch import architecture  # noqa: E402
from edgeseg.converters.checkpoint import load_model  # noqa: E402
from edgeseg.errors import ModelLoadError  # noqa: E402


def _archive(path: Path, pkl: bytes, records: dict = None, compress: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a/data.pkl", pkl)
        z.writestr("a/byteorder", "little")
        for name, data in (records or {}).items():
            z.writestr(f"a/{name}", data, compress_type=compress)
    return path


def _fails_fast(path: Path, message: str, seconds: float = 10.0) -> None:
    t = time.perf_counter()
    with pytest.raises(ModelLoadError, match=message):
        load_model(path)
    assert time.perf_counter() - t < seconds


PROTO = b"\x80\x02"
PICKLES = [
    # one flipped bit in a memo index: CPython would size its memo to 1e9 entries (8 GB)
    ("memo", PROTO + b"}r" + struct.pack("<I", 1_000_000_000) + b".", "memo index 1000000000"),
    ("memo-get", PROTO + b"}q\x00j" + struct.pack("<I", 4_000_000_000) + b".", "memo index"),
    # a bytes object claiming 2 GB in a 20-byte file
    ("bytes", PROTO + b"B" + struct.pack("<I", 2_000_000_000) + b"abc.", "malformed pickle"),
    ("opcode", PROTO + b"(ibuiltins\nset\n.", "opcode INST"),  # protocol-0 INST calls a class
    ("garbage", b"\xff\xfe\xfd", "malformed pickle"),
]


@pytest.mark.parametrize("name,pkl,message", PICKLES, ids=[p[0] for p in PICKLES])
def test_pickle_prescan_refuses_before_unpickling(tmp_path, name, pkl, message):
    _fails_fast(_archive(tmp_path / f"{name}.pt", pkl), message, seconds=2)


def _storage_pickle(numel: int, key: str = "0", storage: str = "FloatStorage") -> bytes:
    """A pickle of ``{"w": tensor}`` whose storage (record data/<key>) holds ``numel`` elements."""
    pid = (b"(X\x07\x00\x00\x00storage" + b"ctorch\n" + storage.encode() + b"\nq\x00"
           + b"X" + struct.pack("<I", len(key)) + key.encode() + b"X\x03\x00\x00\x00cpu"
           + b"\x8a\x08" + struct.pack("<q", numel) + b"tQ")
    shape = b"\x8a\x08" + struct.pack("<q", numel) + b"\x85"
    return (PROTO + b"}X\x01\x00\x00\x00w" + b"ctorch._utils\n_rebuild_tensor_v2\n(" + pid + b"K\x00" + shape
            + b"K\x01\x85\x89ctorch\nOrderedDict\n)Rtbs.")


def test_storage_larger_than_its_record(tmp_path):
    p = _archive(tmp_path / "s.pt", _storage_pickle(10**12), {"data/0": b"\x00" * 16})
    _fails_fast(p, r"declares 1000000000000 float32 elements .* its record holds 16 bytes", seconds=2)


def test_storage_record_missing(tmp_path):
    _fails_fast(_archive(tmp_path / "s.pt", _storage_pickle(4)), "no record data/0", seconds=2)


def test_deflated_storage_is_refused_from_the_directory_before_inflating(tmp_path, monkeypatch):
    # 256 MiB of zeros deflate to 250 kB; the zip directory declares the size: refuse it unread
    p = tmp_path / "bomb.pt"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("a/data.pkl", _storage_pickle(64 << 20))
        info = zipfile.ZipInfo("a/data/0")
        info.compress_type = zipfile.ZIP_DEFLATED
        with z.open(info, "w", force_zip64=True) as f:
            chunk = bytes(1 << 20)
            for _ in range(256):
                f.write(chunk)
    assert p.stat().st_size < 2 << 20
    monkeypatch.setattr(unpickle.LIMITS, "storage_bytes", 128 << 20)
    _fails_fast(p, r"record data/0 declares 268435456 bytes \(at most 134217728", seconds=2)


def test_container_copy_bomb(tmp_path):
    # a 1000-item list copied by tuple() 60,000 times: 60 M items from a 300 kB pickle
    pkl = PROTO + b"]q\x00(" + b"K\x01" * 1000 + b"e" + b"c__builtin__\ntuple\nq\x01"
    pkl += b"h\x01h\x00\x85R0" * 60_000 + b"N."
    _fails_fast(_archive(tmp_path / "copies.pt", pkl), "copies more container items", seconds=5)


class _Mod:
    """Pickles like a torch module (``_modules`` etc. in its __dict__), as ``ultralytics...Model``."""


def _ultralytics(monkeypatch, arch: dict, names=None, modules=None) -> object:
    mod = types.ModuleType("ultralytics.nn.tasks")
    cls = type("SegmentationModel", (), {"__module__": "ultralytics.nn.tasks"})
    mod.SegmentationModel = cls
    for name in ("ultralytics", "ultralytics.nn"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "ultralytics.nn.tasks", mod)
    obj = cls()
    obj.__dict__.update(yaml=arch, names={0: "a"} if names is None else names, _modules=modules or {},
                        _parameters={}, _buffers={})
    return obj, cls


def _save(tmp_path, monkeypatch, obj) -> Path:
    p = tmp_path / "m.pt"
    torch.save({"model": obj, "ema": None}, p)
    monkeypatch.undo()
    return p


def test_modules_cycle(tmp_path, monkeypatch):
    obj, cls = _ultralytics(monkeypatch, architecture("yolov8-seg", "n", 1))
    child = cls()
    child.__dict__.update(_modules={"back": obj}, _parameters={}, _buffers={})
    obj.__dict__["_modules"] = {"model": child}
    _fails_fast(_save(tmp_path, monkeypatch, obj), "contains itself", seconds=5)


def test_modules_dag_with_2_to_the_40_paths(tmp_path, monkeypatch):
    obj, cls = _ultralytics(monkeypatch, architecture("yolov8-seg", "n", 1))
    node = None
    for _ in range(40):
        nxt = cls()
        nxt.__dict__.update(_modules={"a": node, "b": node} if node else {}, _parameters={}, _buffers={})
        node = nxt
    obj.__dict__["_modules"] = {"model": node}
    _fails_fast(_save(tmp_path, monkeypatch, obj), "module paths", seconds=10)


def _arch(**changes) -> dict:
    arch = architecture("yolov8-seg", "n", 1)
    for k, v in changes.items():
        if k == "depth":
            arch["scales"]["n"][0] = v
        elif k == "width":
            arch["scales"]["n"][1] = v
        elif k == "repeats":
            arch["backbone"][2][1] = v
        else:
            arch[k] = v
    return arch


ARCHS = [
    ("nc=1e7", _arch(nc=10_000_000), r"nc \(class count\) must be an integer in 1..10000, found 10000000"),
    ("nc=-5", _arch(nc=-5), "nc .* found -5"),
    ("nc=str", _arch(nc="80"), "nc .* found '80'"),
    ("depth x1e6", _arch(depth=0.33e6), "depth multiple must be"),
    ("width x1000", _arch(width=250.0), "width multiple must be"),
    ("width nan", _arch(width=float("nan")), "width multiple must be"),
    ("repeats", _arch(repeats=10**9), "repeats must be an integer"),
    ("rows", _arch(head=[[-1, 1, "Conv", [64, 3, 1]]] * 500), "expected 1..128 layers"),
    ("from", _arch(head=[[99, 1, "Conv", [64, 3, 1]]]), "'from' must be"),
    ("channels", _arch(backbone=[[-1, 1, "Conv", [10**8, 3, 2]]]), "channels must be an integer"),
    ("kernel", _arch(backbone=[[-1, 1, "Conv", [64, 10**5, 2]]]), "Conv kernel must be"),
    ("segment", _arch(head=[[[-1], 1, "Segment", ["nc", 10**6, 256]]]), "Segment needs"),
    ("scales", _arch(scales=[1, 2, 3]), "scales must map"),
    # inside every per-value bound, but 16x the channels of YOLOv8x: refused by its size, built on meta
    ("size", dict(_arch(width=4.0, max_channels=4096), scales={"n": [1.0, 4.0, 4096]}), "parameters"),
]


@pytest.mark.parametrize("label,arch,message", ARCHS, ids=[a[0] for a in ARCHS])
def test_architecture_bounds_in_checkpoints(tmp_path, monkeypatch, label, arch, message):
    obj, _ = _ultralytics(monkeypatch, arch)
    _fails_fast(_save(tmp_path, monkeypatch, obj), message, seconds=20)


@pytest.mark.parametrize("label,arch,message", ARCHS[:6], ids=[a[0] for a in ARCHS[:6]])
def test_architecture_bounds_in_safetensors_config(tmp_path, label, arch, message):
    from safetensors.torch import save_file

    p = tmp_path / "m.safetensors"
    config = {"format": "edgeseg", "format_version": 1, "arch": arch, "names": {"0": "a"}, "imgsz": [640, 640]}
    save_file({"w": torch.zeros(1)}, str(p), metadata={"edgeseg": json.dumps(config)})
    _fails_fast(p, message, seconds=10)


@pytest.mark.parametrize(
    "names,message",
    [([1, 2], "must map ids to strings"), ("person", "must be a list or a mapping"), ({5: "x"}, "outside 0..0"),
     ({"zero": "x"}, "must map ids to strings")],
)
def test_names_must_be_strings(tmp_path, monkeypatch, names, message):
    obj, _ = _ultralytics(monkeypatch, architecture("yolov8-seg", "n", 1), names=names)
    _fails_fast(_save(tmp_path, monkeypatch, obj), message)


def test_image_size_is_validated(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "m.safetensors"
    config = {"format": "edgeseg", "format_version": 1, "arch": architecture("yolov8-seg", "n", 1),
              "names": {"0": "a"}, "imgsz": [10**9, "x"]}
    save_file({"w": torch.zeros(1)}, str(p), metadata={"edgeseg": json.dumps(config)})
    _fails_fast(p, "image size must be")
