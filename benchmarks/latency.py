"""Per-frame overhead of the runtime: Runtime against the bare vendor invoke of the same model.

    python benchmarks/latency.py [--runs 60] [--threads 2] [--image PATH] [--models M1 M2 ...] [--scaling]

For each model, in one process and interleaved (one bare invoke, one Runtime call to boxes, one
full Runtime call, round after round, so load changes hit all three alike), medians of:
- ``bare``: the vendor call alone on a ready input tensor (LiteRT: ``set_tensor`` + ``invoke`` +
  ``get_tensor`` of every output on its own ``Interpreter``; other formats: the backend's ``run``);
- ``boxes``: ``Runtime`` from a decoded BGR image to boxes, scores and classes (letterbox, input
  conversion, inference, decoding, NMS), no masks;
- ``full``: ``Runtime(image)``: the same plus every detection's mask at source resolution.
On LiteRT, ``Runtime`` writes the letterbox straight into the interpreter's input tensor and
decodes the outputs where they lie (``Backend.run_in_place``), so it skips the ``set_tensor`` /
``get_tensor`` copies that ``bare`` makes; ``boxes`` takes that path too.
Overhead = (Runtime - bare) / bare. A second table gives the full calls' own stage timings
(``Results.speed``): preprocessing (letterbox resize and input conversion), Runtime's own invoke
and postprocessing (decode, NMS, masks, Results), as medians and as shares of ``bare``; ``saved``
is what that invoke saves against the bare call (the copies), so overhead ~ pre + post - saved.
The machine's load average is printed with the numbers: on a loaded machine every figure is
slower and noisier.

``--scaling`` adds postprocessing of 1, 10 and 100 detections with per-box masks against a
dense N x H x W approach, and numpy NMS against OpenCV's.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"
MODELS = ASSETS / "models"
DEFAULT_MODELS = [MODELS / "yolov8n-seg-640-int8w.tflite", MODELS / "yolov8n-seg-640-fullint8.tflite"]


def bare_invoke(model: Path, feeds: Dict[str, np.ndarray], threads: int, backend_cls) -> Callable[[], object]:
    """The vendor call alone, on its own session of the same model."""
    if model.suffix.lower() == ".tflite":
        from edgeseg.runtimes.litert import _interpreter_api

        Interpreter = _interpreter_api()[0]
        it = Interpreter(model_path=str(model), num_threads=threads)
        it.allocate_tensors()
        (x,) = feeds.values()
        i_in = it.get_input_details()[0]["index"]
        outs = [d["index"] for d in it.get_output_details()]

        def run() -> object:
            it.set_tensor(i_in, x)
            it.invoke()
            return [it.get_tensor(i) for i in outs]

        return run
    be = backend_cls(model, threads=threads)
    return lambda: be.run(feeds)


def overhead(model: Path, img: np.ndarray, runs: int, threads: int) -> Dict[str, float]:
    from edgeseg import Runtime

    rt = Runtime(model, threads=threads)
    feeds, _ = rt.preprocess(img)
    bare = bare_invoke(model, feeds, threads, type(rt.backend))
    rt(img)  # resolves the layout
    dec = rt._decoder

    def boxes() -> object:
        if rt._in_place:  # the path Runtime(image) takes: no copies in or out
            return rt._run_in_place(img, dec.detect)[0]  # type: ignore[union-attr]
        f, lb = rt.preprocess(img)
        return dec.detect(rt.infer(f), lb)  # type: ignore[union-attr]

    stages: Dict[str, List[float]] = {"preprocess": [], "inference": [], "postprocess": []}

    def full() -> object:
        res = rt(img)
        for k in stages:  # the full call's own stage timings (Results.speed)
            stages[k].append(res.speed[k])
        return res

    fns = {"bare": bare, "boxes": boxes, "full": full}
    times: Dict[str, List[float]] = {k: [] for k in fns}
    for _ in range(3):
        for fn in fns.values():
            fn()
    order = list(fns)
    for r in range(runs):
        for k in order[r % 3:] + order[: r % 3]:  # rotate who goes first
            t0 = time.perf_counter()
            fns[k]()
            times[k].append((time.perf_counter() - t0) * 1e3)
    res = rt(img)
    rt.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    med.update({k: statistics.median(v[-runs:]) for k, v in stages.items()})
    med["detections"] = len(res)
    return med


def median_ms(fn: Callable[[], object], runs: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


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
    from edgeseg.postprocess import Decoder, nms, process_masks

    with Runtime(model, conf=0.001) as rt:
        feeds, lb = rt.preprocess(img)
        raw = rt.infer(feeds)
        specs = {s.name: s for s in rt.backend.outputs}
        out = {n: dequantize(a, specs[n]) for n, a in raw.items()}
        layout = rt.layout
        protos = out[layout.protos][0]
        print(f"\npostprocess of N detections on {model.name} ({lb.orig_shape[1]}x{lb.orig_shape[0]} source), median ms:")
        print(f"  {'N':>4}  {'edgeseg (per-box)':>18}  {'dense NxHxW':>12}  {'dense/edgeseg':>13}")
        for n in (1, 10, 100):
            dec = Decoder(layout, conf=0.001, iou=0.7, max_det=n)
            ib, sb, _, _, cf = dec.detect(out, lb)
            k = len(ib)
            ours = median_ms(lambda: dec(out, lb), runs)
            masks_only = median_ms(lambda: process_masks(protos, layout.protos_nhwc, cf, ib, sb, lb), runs)
            dense = median_ms(lambda: dense_masks(protos, layout.protos_nhwc, cf, ib, lb), max(runs // 5, 3))
            dense_total = dense + (ours - masks_only)  # the dense approach also needs decode + NMS
            print(f"  {k:>4}  {ours:>18.2f}  {dense_total:>12.2f}  {dense_total / ours:>12.1f}x")
        dec = Decoder(layout, conf=0.001, iou=0.7, max_det=300)
        boxes, scores, cls, coefs = dec._candidates(out, lb.input_shape)
        ok = dec._valid(boxes, scores, cls, coefs)  # as detect(): boxes without area never reach NMS
        boxes, scores, cls = boxes[ok], scores[ok], cls[ok]
        t_np = median_ms(lambda: nms(boxes, scores, cls, 0.7, 300, impl="numpy"), runs)
        t_cv = median_ms(lambda: nms(boxes, scores, cls, 0.7, 300, impl="opencv"), runs)
        same = np.array_equal(np.sort(nms(boxes, scores, cls, 0.7, 300, impl="numpy")),
                              np.sort(nms(boxes, scores, cls, 0.7, 300, impl="opencv")))
        print(f"\nclass-aware NMS on {len(boxes)} candidates (conf 0.001): numpy {t_np:.3f} ms, "
              f"OpenCV {t_cv:.3f} ms (opencv/numpy {t_cv / t_np:.2f}); same detections kept: {same}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--image", type=Path, default=ASSETS / "images" / "bus.jpg")
    ap.add_argument("--models", type=Path, nargs="*", default=DEFAULT_MODELS)
    ap.add_argument("--scaling", action="store_true", help="also postprocessing of 1/10/100 detections vs dense masks")
    args = ap.parse_args()
    missing = [p for p in [args.image, *args.models] if not p.exists()]
    if missing:
        print(f"missing test material: {', '.join(map(str, missing))} (expected ../shared/assets)", file=sys.stderr)
        return 2
    from edgeseg.io import read_image

    img = read_image(args.image)
    load0 = os.getloadavg()[0]
    print(f"image {args.image.name} {img.shape[1]}x{img.shape[0]}, {args.runs} interleaved rounds, {args.threads} threads, "
          f"{os.cpu_count()} CPUs, load average {load0:.1f}")
    print(f"{'model':<34} {'bare ms':>8} {'boxes ms':>9} {'full ms':>8} {'dets':>5} "
          f"{'overhead boxes':>15} {'overhead +masks':>16}")
    stats = []
    for m in args.models:
        s = overhead(m, img, args.runs, args.threads)
        stats.append((m, s))
        ob, of = (s["boxes"] - s["bare"]) / s["bare"], (s["full"] - s["bare"]) / s["bare"]
        print(f"{m.name:<34} {s['bare']:>8.2f} {s['boxes']:>9.2f} {s['full']:>8.2f} {int(s['detections']):>5} "
              f"{ob:>8.3f} ({s['boxes'] - s['bare']:>4.1f}ms) {of:>8.3f} ({s['full'] - s['bare']:>4.1f}ms)")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    # where the overhead goes, from the full calls' own stage timings: overhead = pre + post minus
    # what Runtime's own invoke saves against the bare call (its copies in and out)
    print(f"\n{'inside the full call (medians)':<34} {'pre ms':>8} {'invoke ms':>10} {'post ms':>8} "
          f"{'pre/bare':>9} {'post/bare':>10} {'saved/bare':>11}")
    for m, s in stats:
        b = s["bare"]
        print(f"{m.name:<34} {s['preprocess']:>8.2f} {s['inference']:>10.2f} {s['postprocess']:>8.2f} "
              f"{s['preprocess'] / b:>9.3f} {s['postprocess'] / b:>10.3f} {(b - s['inference']) / b:>11.3f}")
    if args.scaling:
        for m in args.models:
            postprocess_scaling(m, img, max(args.runs // 2, 5))
    return 0


if __name__ == "__main__":
    sys.exit(main())
