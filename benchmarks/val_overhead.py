"""How much of `edgeseg val` is not model inference, and how much memory it needs.

    python benchmarks/val_overhead.py [--models M1 M2 ...] [--data coco128-seg.yaml] [--save-json]

For each model, in a fresh subprocess (so peak memory is that run's own): a full validation on
the dataset (conf 0.001, iou 0.7, max_det 300), then, as the reference in the same process, a
plain prediction loop over the same images with the same settings. Prints per model:

- wall time of val, and the share of it spent outside the backend's inference calls
  (target: at most 15%); beside it, the CPU time of the work around inference (the runtime's
  pre/postprocessing; scoring: label rasterization, matching), which val overlaps with inference;
- val wall time / plain prediction wall time (what validating adds to just running the model;
  the plain loop runs before and after val and the faster run counts, as the machine may be shared);
- peak resident memory of the process (target: under 1 GiB) and the Python heap peak of the
  metric bookkeeping alone (tracemalloc, measured on a replay of the val loop's evaluator).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"
DATA = ASSETS / "datasets" / "coco128-seg.yaml"
MODELS = {
    "yolov8n-seg-320-int8dyn.onnx": 320,
    "yolov8n-seg-640-int8w.tflite": 640,
}

CHILD = r"""
import json, os, resource, sys, tempfile, time, tracemalloc
import numpy as np
from edgeseg import Runtime
from edgeseg.eval.datasets import load_dataset
from edgeseg.io import read_image
from edgeseg.eval.metrics import COCOEvaluator
from edgeseg.eval.validate import validate

model, imgsz, data, save_json = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
rt = Runtime(model, imgsz=imgsz, conf=0.001, iou=0.7, max_det=300)
rt.warmup()
ds = load_dataset(data)

def predict_all():
    # reference: the same images through the same runtime, nothing else
    t0 = time.perf_counter()
    out = [rt(read_image(it.path)) for it in ds]
    return out, time.perf_counter() - t0

# reference before and after val (the machine may be shared: take the faster of the two)
results, pred_wall_1 = predict_all()
del results
t0 = time.perf_counter()
m = rt.val(data=ds, save_json=os.path.join(tempfile.gettempdir(), "_val_overhead.json") if save_json else None)
val_wall = time.perf_counter() - t0
n = m.images
results, pred_wall_2 = predict_all()
pred_wall = min(pred_wall_1, pred_wall_2)

# Python heap of the evaluator bookkeeping, replayed on the predictions just made
tracemalloc.start()
ev = COCOEvaluator(len(ds.names))
for it, r in zip(ds, results):
    h, w = r.orig_shape
    tg = it.targets(h, w)
    xyxy = r.boxes.astype(np.float64)
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], 1)
    dm = [(c, int(o[0]), int(o[1])) for c, o in zip(r.masks.crops, r.masks.offsets)]
    ev.update(it.image_id, tg.class_ids, tg.boxes, tg.iscrowd, tg.areas, xywh, r.scores, r.class_ids, tg.masks, dm)
ev.compute()
heap_peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()

s = m.speed
print(json.dumps({
    "images": n, "val_wall_s": val_wall, "pred_wall_s": pred_wall,
    "inference_s": s["inference"] * n / 1e3, "runtime_s": (s["preprocess"] + s["inference"] + s["postprocess"]) * n / 1e3,
    "metrics_s": s["metrics"] * n / 1e3, "box_map": m.box.map, "seg_map": m.seg.map,
    "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "heap_peak_mib": heap_peak / 2**20,
}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=list(MODELS), help="model files (names resolve in ../shared/assets/models)")
    ap.add_argument("--imgsz", type=int, default=None, help="inference size (default: 320 for the ONNX, 640 for the TFLite)")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--save-json", action="store_true", help="also write the COCO results file during val")
    args = ap.parse_args()
    if not Path(args.data).is_file():
        print(f"dataset not found: {args.data}", file=sys.stderr)
        return 2
    ok = True
    for name in args.models:
        path = Path(name) if Path(name).exists() else ASSETS / "models" / name
        imgsz = args.imgsz or MODELS.get(path.name, 640)
        proc = subprocess.run([sys.executable, "-c", CHILD, str(path), str(imgsz), args.data, "1" if args.save_json else "0"],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{path.name}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            ok = False
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        wall = r["val_wall_s"]
        outside = 1 - r["inference_s"] / wall
        pre_post = (r["runtime_s"] - r["inference_s"]) / wall
        print(f"{path.name} @ {imgsz}: {r['images']} images, box mAP50-95 {r['box_map']:.4f}, mask {r['seg_map']:.4f}")
        print(f"  val wall            {wall:7.2f} s  ({wall / r['images'] * 1e3:.1f} ms/image)")
        print(f"  outside inference   {outside:7.1%}  (target <= 15%): wall time not spent in the backend's inference calls")
        print(f"  work around it      {pre_post:7.1%}  runtime pre/postprocess + {r['metrics_s'] / wall:.1%} scoring, as CPU time"
              f" over the wall time; postprocessing and scoring run in a thread beside inference, so most of it is hidden")
        print(f"  val / plain predict {wall / r['pred_wall_s']:7.3f}x  (same images, same runtime, measured in this run)")
        print(f"  peak RSS            {r['maxrss_mib']:7.0f} MiB (target < 1024)   evaluator heap peak {r['heap_peak_mib']:.1f} MiB")
        ok &= outside <= 0.15 and r["maxrss_mib"] < 1024
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
