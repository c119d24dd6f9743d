"""fp32 vs int8 inference speed of ONNX (onnxruntime) and OpenVINO exports: the bare backend
(``Runtime(...).backend.run``, no pre/postprocessing), 2 threads, one fixed input, invocations of
all models interleaved in one run; prints medians and the int8/fp32 speed-up per format.

    .venv/bin/python benchmarks/int8_formats.py --dir OUT   # exports the four models at 320 into OUT
    .venv/bin/python benchmarks/int8_formats.py --onnx n.onnx n_int8.onnx --openvino n_ov/ n_int8_ov/

Exports use the COCO checkpoint from ../shared/assets (int8 calibrated on 16 coco128-seg images:
enough for timing, not for accuracy; no accuracy report). OpenVINO runs with the f32 precision hint
(the runtime's default), so fp32 is not silently bf16.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"


def bench(paths: List[Path], runs: int, threads: int) -> List[float]:
    """Median seconds per run of each model, interleaved (a, b, c, ..., a, b, c); 3 warm-ups."""
    from edgeseg import Runtime

    rts = [Runtime(p, threads=threads) for p in paths]
    feeds = []
    for rt in rts:
        spec = rt.input_spec
        feeds.append({spec.name: np.random.RandomState(0).rand(*spec.shape).astype(np.float32)})
    times: List[List[float]] = [[] for _ in paths]
    for i in range(runs + 3):
        for k, rt in enumerate(rts):
            t = time.perf_counter()
            rt.backend.run(feeds[k])
            if i >= 3:
                times[k].append(time.perf_counter() - t)
    for rt in rts:
        rt.close()
    return [statistics.median(t) for t in times]


def _export(out: Path, imgsz: int) -> Dict[str, List[Path]]:
    from edgeseg.converters import export

    pt = ASSETS / "models" / "yolov8n-seg-coco.pt"
    data = ASSETS / "datasets" / "coco128-seg"
    if not pt.exists():
        raise SystemExit(f"{pt} not found: pass --onnx and --openvino")
    # an image folder: calibration only, no accuracy report
    kw = dict(imgsz=imgsz, progress=False)
    q = dict(int8=True, data=data / "images" / "train2017", calib_images=16)
    made: Dict[str, List[Path]] = {}
    for fmt, suffix in (("onnx", ".onnx"), ("openvino", "_openvino_model")):
        fp = out / f"fp32{suffix}"
        i8 = out / f"int8{suffix}"
        fp = fp if fp.exists() else export(pt, to=fmt, out=fp, **kw)
        i8 = i8 if i8.exists() else export(pt, to=fmt, out=i8, **kw, **q)
        made[fmt] = [fp, i8]
    return made


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx", type=Path, nargs=2, metavar=("FP32", "INT8"))
    ap.add_argument("--openvino", type=Path, nargs=2, metavar=("FP32", "INT8"))
    ap.add_argument("--dir", type=Path, help="export the models here (kept for reruns)")
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    pairs: Dict[str, List[Path]] = {k: v for k, v in (("onnx", args.onnx), ("openvino", args.openvino)) if v}
    if not pairs:
        if args.dir is None:
            print("pass --onnx/--openvino model pairs or --dir to export them", file=sys.stderr)
            return 2
        args.dir.mkdir(parents=True, exist_ok=True)
        pairs = _export(args.dir, args.imgsz)
    order = [p for pair in pairs.values() for p in pair]
    medians = dict(zip(order, bench(order, args.runs, args.threads)))
    for fmt, (fp, i8) in pairs.items():
        t32, t8 = medians[fp], medians[i8]
        print(f"{fmt:<9} fp32 {t32 * 1e3:7.1f} ms   int8 {t8 * 1e3:7.1f} ms   int8 speed-up {t32 / t8:.2f}x")
    print(f"(median of {args.runs}, all models interleaved, {args.threads} threads, bare backend run)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
