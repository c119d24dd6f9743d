"""Tracker cost against detection, and MOT metrics on a synthetic clip with ground truth.

    python benchmarks/tracking.py [--model M] [--frames 60] [--tracker bytetrack|botsort]

1. **Cost**: the rendered clip (tests/_tracking_clip.py: real persons cut from bus.jpg that cross
   and occlude each other) is run through the 320 ONNX model; per frame, the median time of
   detection (preprocess + inference + postprocess) and of the tracking stage (tracker + trails +
   a count line and a zone) are measured in the same run. Prints the ratio (must stay < 5 %).
2. **Accuracy**: IDF1, identity switches and MOTA of the tracker on the model's detections of the
   clip and on ground-truth-like detections with noise, dropouts and false boxes (5 seeds), with
   edgeseg's own metrics (``edgeseg.eval.mot``) and, when installed, ``motmetrics`` beside them.

The clip generator stands in for ``edgeseg data synth --video`` until that lands.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"
sys.path.insert(0, str(ROOT / "tests"))  # the clip generator lives with the tests

import _tracking_clip as clip  # noqa: E402


def _motmetrics(frames):
    try:
        import motmetrics as mm
    except ImportError:
        return None
    acc = mm.MOTAccumulator(auto_id=True)
    for g_ids, g_boxes, p_ids, p_boxes in frames:
        keep = np.asarray(p_ids) >= 0
        pb = np.asarray(p_boxes).reshape(-1, 4)[keep]
        gb = np.asarray(g_boxes).reshape(-1, 4)
        to_xywh = lambda b: np.c_[b[:, :2], b[:, 2:] - b[:, :2]]  # noqa: E731
        acc.update(list(g_ids), list(np.asarray(p_ids)[keep]), mm.distances.iou_matrix(to_xywh(gb), to_xywh(pb), max_iou=0.5))
    s = mm.metrics.create().compute(acc, metrics=["idf1", "num_switches", "mota"], name="clip")
    return {"idf1": float(s["idf1"].iloc[0]), "id_switches": int(s["num_switches"].iloc[0]), "mota": float(s["mota"].iloc[0])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ASSETS / "models" / "yolov8n-seg-320-int8dyn.onnx"))
    ap.add_argument("--frames", type=int, default=clip.N_FRAMES, help="clip frames used for the cost (max 100)")
    ap.add_argument("--tracker", default="bytetrack")
    args = ap.parse_args()
    import cv2

    from edgeseg import Results, Runtime
    from edgeseg.eval.mot import mot_metrics
    from edgeseg.live.tracking import Analytics, TrackingStage, make_tracker

    ref = ASSETS / "reference" / "yolov8n-seg-320-int8dyn__bus.json"
    sprites = clip.sprites_from_reference(cv2.imread(str(ASSETS / "images" / "bus.jpg")), json.loads(ref.read_text()))
    frames = clip.render(sprites=sprites)[: args.frames]
    gt = clip.ground_truth()

    # 1) cost: detection and tracking of the same frames, same run
    an = Analytics.from_specs([clip.LINES["h"]], [clip.ZONES["right"]])
    with Runtime(args.model, conf=0.1) as rt:
        rt.warmup()
        stage = TrackingStage(args.tracker, an, keep_conf=0.25, fps=clip.FPS)
        det_ms, trk_ms, out = [], [], []
        for f, img in enumerate(frames):
            t0 = time.perf_counter()
            res = rt(img)
            t1 = time.perf_counter()
            res, _ = stage(res, f)
            t2 = time.perf_counter()
            det_ms.append((t1 - t0) * 1e3)
            trk_ms.append((t2 - t1) * 1e3)
            out.append(res)
    d, t = statistics.median(det_ms), statistics.median(trk_ms)
    print(f"detection (320 ONNX, pre+infer+post): median {d:.2f} ms/frame")
    print(f"tracking stage ({args.tracker} + trails + 1 line + 1 zone): median {t:.3f} ms/frame")
    print(f"tracking / detection: {100 * t / d:.2f} %  (must be < 5 %)")

    # 2) accuracy on the model's detections and on noisy ground truth
    model_frames = [(gt[f]["ids"], gt[f]["boxes"], r.track_ids, r.boxes) for f, r in enumerate(out)]
    m = mot_metrics(model_frames)
    print(f"model detections, {len(out)} frames: IDF1 {m['idf1']:.3f}, ID switches {m['id_switches']}, MOTA {m['mota']:.3f}"
          f" (GT {m['gt']}, FP {m['fp']}, FN {m['fn']}, tracks {m['pred_tracks']}/{m['gt_tracks']})")
    ref_m = _motmetrics(model_frames)
    print("  motmetrics:", ref_m if ref_m else "not installed (pip install motmetrics to compare)")
    rows = []
    for seed in range(5):
        dets = clip.noisy_detections(gt, seed=seed)
        tr = make_tracker(args.tracker)
        fr = [(g["ids"], g["boxes"], tr.update(x["boxes"], x["scores"], x["classes"], time=f), x["boxes"])
              for f, (g, x) in enumerate(zip(gt, dets))]
        rows.append(mot_metrics(fr))
    print(f"noisy ground truth, 5 seeds: IDF1 min {min(r['idf1'] for r in rows):.3f} mean "
          f"{np.mean([r['idf1'] for r in rows]):.3f}, ID switches max {max(r['id_switches'] for r in rows)}, "
          f"MOTA mean {np.mean([r['mota'] for r in rows]):.3f}")
    return 0 if t / d < 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())
