"""int8 vs fp32 TFLite inference speed: the bare LiteRT interpreter (XNNPACK, 2 threads), same
run, same input; prints medians and the int8/fp32 speed-up.

    .venv/bin/python benchmarks/tflite_int8.py                      # exports both at 640 first
    .venv/bin/python benchmarks/tflite_int8.py --fp32 n.tflite --int8 n_int8.tflite [--runs 30]

Without --fp32/--int8 the COCO checkpoint from ../shared/assets is exported (int8 calibrated on
coco8-seg's 4 train images: enough for timing, not for accuracy) into a temporary folder.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"


def _interpreter(path: Path, threads: int):
    """An interpreter with a fixed random input set (quantized for integer inputs)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=threads)
    interp.allocate_tensors()
    d = interp.get_input_details()[0]
    x = np.random.RandomState(0).rand(*d["shape"]).astype(np.float32)
    if np.dtype(d["dtype"]) != np.float32:
        scale, zp = d["quantization"]
        info = np.iinfo(d["dtype"])
        x = np.clip(np.rint(x / scale + zp), info.min, info.max).astype(d["dtype"])
    interp.set_tensor(d["index"], x)
    return interp


def bench(paths: "list[Path]", runs: int, threads: int) -> "list[float]":
    """Median seconds per invoke of each model, invocations interleaved (a, b, a, b, ...) so a
    change of machine load hits both alike; 3 warm-up runs each."""
    interps = [_interpreter(p, threads) for p in paths]
    times: "list[list[float]]" = [[] for _ in paths]
    for i in range(runs + 3):
        for k, interp in enumerate(interps):
            t = time.perf_counter()
            interp.invoke()
            if i >= 3:
                times[k].append(time.perf_counter() - t)
    return [statistics.median(t) for t in times]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fp32", type=Path)
    ap.add_argument("--int8", type=Path)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgeseg-bench-") as tmp:
        fp32, int8 = args.fp32, args.int8
        if fp32 is None or int8 is None:
            from edgeseg.converters import export

            pt = ASSETS / "models" / "yolov8n-seg-coco.pt"
            if not pt.exists():
                print(f"{pt} not found: pass --fp32 and --int8", file=sys.stderr)
                return 2
            fp32 = fp32 or export(pt, to="tflite", imgsz=args.imgsz, out=Path(tmp) / "fp32.tflite", progress=False)
            int8 = int8 or export(pt, to="tflite", imgsz=args.imgsz, int8=True, data=ASSETS / "datasets" / "coco8-seg.yaml",
                                  val_data=None, out=Path(tmp) / "int8.tflite", progress=False)
        t32, t8 = bench([fp32, int8], args.runs, args.threads)
    print(f"fp32 {fp32.name}: {t32 * 1e3:.1f} ms   int8 {int8.name}: {t8 * 1e3:.1f} ms   "
          f"(median of {args.runs}, interleaved, {args.threads} threads)")
    print(f"int8 speed-up: {t32 / t8:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
