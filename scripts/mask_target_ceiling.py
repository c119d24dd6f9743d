"""How well can masks on the 1/4-resolution prototype grid fit the ground truth at best?

    python scripts/mask_target_ceiling.py DATASET_DIR [--split val] [--ratio 4]

For every object of a YOLO-seg dataset of square images (``edgeseg data synth``), the ground-truth
polygon is put on the prototype grid in two ways and brought back the way the runtime does it
(logits resized bilinearly to image resolution, thresholded at 0):

- ``binary``: the polygon rasterized on the grid itself (0/1 cells: what the trainer's targets
  were before coverage targets);
- ``coverage``: the fraction of each cell the object covers (the trainer's targets now).

Each is scored by its IoU with the polygon rasterized at image resolution (occlusion as the
trainer draws it: larger objects first, with the trainer's own rasterization). Printed: mean IoU and, as if every object were
detected with the right box, the mask mAP50-95 that this alone allows (mean over IoU
thresholds 0.50:0.95 of the fraction of objects at or above it).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from edgeseg.converters.train.data import _boxes, _overlap_mask  # the trainer's rasterization (needs torch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path, help="dataset folder with images/<split> and labels/<split>")
    ap.add_argument("--split", default="val")
    ap.add_argument("--ratio", type=int, default=4, help="image pixels per prototype cell")
    args = ap.parse_args()

    ious = {"binary": [], "coverage": []}
    labels = sorted((args.dataset / "labels" / args.split).glob("*.txt"))
    if not labels:
        raise SystemExit(f"no labels under {args.dataset / 'labels' / args.split}")
    for lab in labels:
        img = next((args.dataset / "images" / args.split).glob(lab.stem + ".*"))
        h, w = cv2.imread(str(img)).shape[:2]
        if h != w or h % args.ratio:
            raise SystemExit(f"{img}: {w}x{h}; this check needs square images, a multiple of {args.ratio}")
        rows = [line.split() for line in lab.read_text().splitlines() if line.strip()]
        segs = [np.array(r[1:], np.float64).reshape(-1, 2) * h for r in rows]
        g, boxes = h // args.ratio, _boxes(segs, h)
        full = _overlap_mask(segs, boxes, h)
        grid = _overlap_mask([p / args.ratio for p in segs], boxes / args.ratio, g)  # 0/1 cells on the grid
        for j in range(len(segs)):
            truth = full == j + 1
            if not truth.any():
                continue
            binary = (grid == j + 1).astype(np.float32) - 0.5
            cover = np.clip(cv2.resize(truth.astype(np.float32), (g, g), interpolation=cv2.INTER_AREA), 1e-3, 1 - 1e-3)
            for name, logits in (("binary", binary), ("coverage", np.log(cover / (1 - cover)))):
                m = cv2.resize(logits, (w, h), interpolation=cv2.INTER_LINEAR) > 0
                ious[name].append((m & truth).sum() / (m | truth).sum())
    thresholds = np.arange(0.5, 0.96, 0.05)
    for name, v in ious.items():
        v = np.array(v)
        ceiling = np.mean([(v >= t).mean() for t in thresholds])
        print(f"{name:9s} {len(v)} objects  mean IoU {v.mean():.3f}  mask mAP50-95 ceiling {ceiling:.3f}")


if __name__ == "__main__":
    main()
