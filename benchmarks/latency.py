"""Per-stage latency of the runtime, and the cost of per-box masks against dense N x H x W masks.

    python benchmarks/latency.py [--runs 50] [--threads 2] [--image PATH] [--models M1 M2 ...]

Prints, for each model on the image: median preprocess / inference / postprocess milliseconds and
the ratio (preprocess + postprocess) / inference. Then, on the same model outputs, postprocessing
of 1, 10 and 100 detections with edgeseg's per-box masks against a dense approach that builds
full-frame masks (the way most tools do it), and numpy NMS against OpenCV's NMS.
All numbers are measured in this run; ratios compare like with like.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"
DEFAULT_MODELS = [ASSETS / "models" / "yolov8n-seg-320-int8dyn.onnx", ASSETS / "models" / "yolov8n-seg-640-int8w.tflite"]


def median_ms(fn: Callable[[], object], runs: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def stage_latency(model: Path, img: np.ndarray, runs: int, threads: int) -> Dict[str, float]:
    from edgeseg import Runtime

    with Runtime(model, threads=threads) as rt:
        for _ in range(5):
            rt(img)
        stages: Dict[str, List[float]] = {"preprocess": [], "inference": [], "postprocess": []}
        for _ in range(runs):
            res = rt(img)
            for k in stages:
                stages[k].append(res.speed[k])
    return {k: statistics.median(v) for k, v in stages.items()}


def dense_masks(protos: np.ndarray, nhwc: bool, coefs: np.ndarray, input_boxes: np.ndarray, lb) -> np.ndarray:
    """The common dense approach: full-frame logits per detection, upsampled to the input, cropped,
    then every mask resized to the source frame: N x H x W."""
    import cv2

    p = protos.transpose(2, 0, 1) if nhwc else protos
    nm, mh, mw = p.shape
    ih, iw = lb.input_shape
    H, W = lb.orig_shape
    logits = (coefs @ p.reshape(nm, -1)).reshape(-1, mh, mw)
    out = np.zeros((len(coefs), H, W), bool)
    left, top = lb.pad
    rh, rw = lb.resized
    r = np.arange(iw)[None, :]
    c = np.arange(ih)[:, None]
    for i, m in enumerate(logits):
        up = cv2.resize(m, (iw, ih), interpolation=cv2.INTER_LINEAR)
        x1, y1, x2, y2 = input_boxes[i]
        up = up * ((r >= x1) & (r < x2) & (c >= y1) & (c < y2))
        binary = (up > 0).astype(np.float32)[top: top + rh, left: left + rw]
        out[i] = cv2.resize(binary, (W, H), interpolation=cv2.INTER_LINEAR) > 0.5
    return out


def postprocess_scaling(model: Path, img: np.ndarray, runs: int) -> None:
    from edgeseg import Runtime
    from edgeseg.backend import dequantize
    from edgeseg.postprocess import Decoder, process_masks

    with Runtime(model, conf=0.001) as rt:
        feeds, lb = rt.preprocess(img)
        raw = rt.infer(feeds)
        out = {n: dequantize(a, rt._out_specs[n]) for n, a in raw.items()}
        layout = rt.layout
        protos = out[layout.protos][0]
        print(f"\npostprocess of N detections on {model.name} ({lb.orig_shape[1]}x{lb.orig_shape[0]} source), median ms:")
        print(f"  {'N':>4}  {'edgeseg (per-box)':>18}  {'dense NxHxW':>12}  {'dense/edgeseg':>13}")
        for n in (1, 10, 100):
            dec = Decoder(layout, conf=0.001, iou=0.7, max_det=n)
            det = dec(out, lb)
            k = len(det.scores)
            boxes, scores, cls, coefs = dec._candidates(out, lb.input_shape)
            from edgeseg.postprocess import nms

            keep = nms(boxes, scores, cls, 0.7, n)
            ib, cf = boxes[keep], np.ascontiguousarray(coefs[keep], np.float32)
            sb = lb.to_source(ib.copy())
            ours = median_ms(lambda: dec(out, lb), runs)
            masks_only = median_ms(lambda: process_masks(protos, layout.protos_nhwc, cf, ib, sb, lb), runs)
            dense = median_ms(lambda: dense_masks(protos, layout.protos_nhwc, cf, ib, lb), max(runs // 5, 3))
            # the dense approach also needs the same decode + NMS work
            dense_total = dense + (ours - masks_only)
            print(f"  {k:>4}  {ours:>18.2f}  {dense_total:>12.2f}  {dense_total / ours:>12.1f}x")

        boxes, scores, cls, _ = Decoder(layout, conf=0.001, iou=0.7, max_det=300)._candidates(out, lb.input_shape)
        from edgeseg.postprocess import nms

        t_np = median_ms(lambda: nms(boxes, scores, cls, 0.7, 300, impl="numpy"), runs)
        t_cv = median_ms(lambda: nms(boxes, scores, cls, 0.7, 300, impl="opencv"), runs)
        same = np.array_equal(np.sort(nms(boxes, scores, cls, 0.7, 300, impl="numpy")),
                              np.sort(nms(boxes, scores, cls, 0.7, 300, impl="opencv")))
        print(f"\nclass-aware NMS on {len(boxes)} candidates (conf 0.001): numpy {t_np:.3f} ms, "
              f"OpenCV {t_cv:.3f} ms (opencv/numpy {t_cv / t_np:.2f}); same detections kept: {same}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--image", type=Path, default=ASSETS / "images" / "bus.jpg")
    ap.add_argument("--models", type=Path, nargs="*", default=DEFAULT_MODELS)
    args = ap.parse_args()
    missing = [p for p in [args.image, *args.models] if not p.exists()]
    if missing:
        print(f"missing test material: {', '.join(map(str, missing))} (expected ../shared/assets)", file=sys.stderr)
        return 2
    from edgeseg.io import read_image

    img = read_image(args.image)
    print(f"image {args.image.name} {img.shape[1]}x{img.shape[0]}, {args.runs} runs, {args.threads} threads")
    print(f"{'model':<34} {'pre ms':>8} {'infer ms':>9} {'post ms':>8} {'(pre+post)/infer':>17}")
    for m in args.models:
        s = stage_latency(m, img, args.runs, args.threads)
        ratio = (s["preprocess"] + s["postprocess"]) / s["inference"]
        print(f"{m.name:<34} {s['preprocess']:>8.2f} {s['inference']:>9.2f} {s['postprocess']:>8.2f} {ratio:>17.3f}")
    for m in args.models:
        postprocess_scaling(m, img, max(args.runs // 2, 5))
    return 0


if __name__ == "__main__":
    sys.exit(main())
