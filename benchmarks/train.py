"""Training throughput (images/s) of one process vs two gloo processes, and peak RSS per epoch.

    python benchmarks/train.py                                   # synthetic data, quick
    python benchmarks/train.py --data ../shared/assets/datasets/coco128-seg.yaml --imgsz 320 --batch 8 \
        --workers 2 --epochs 5 --model yolov8n-seg               # the issue's setting

Prints images/s for 1 and 2 processes (and their ratio) and the peak resident memory of the
training process after each epoch (RSS growth over epochs is the thing to watch: it should be flat).
"""
from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="dataset YAML (default: 64 synthetic train images)")
    ap.add_argument("--model", default="yolov8n-seg")
    ap.add_argument("--imgsz", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()

    from edgeseg.converters.train import train
    from edgeseg.converters.train.data import SegDataset

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        data = args.data
        if data is None:
            from edgeseg.eval.datasets.synth import synth_dataset

            data = synth_dataset(Path(d) / "synth", images=72, imgsz=args.imgsz, val_fraction=1 / 9)["yaml"]
        n = len(SegDataset(data, "train", args.imgsz, augment=False))
        common = dict(data=str(data), model=args.model, imgsz=args.imgsz, batch=args.batch, workers=args.workers,
                      val=False, verbose=False, project=d, exist_ok=True, warmup_epochs=0)
        samples = []  # (seconds since start, RSS MiB of this process), every 0.2 s
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                samples.append((time.perf_counter() - r1, _rss_mib()))
                stop.wait(0.2)

        r1 = time.perf_counter()
        th = threading.Thread(target=sample, daemon=True)
        th.start()
        res = train(epochs=args.epochs, name="one", **common)
        stop.set()
        th.join()
        one = n * args.epochs / (time.perf_counter() - r1)
        ends = np.cumsum([row["time"] for row in res.rows]) + (samples[-1][0] - sum(row["time"] for row in res.rows))
        per_epoch = [max([m for t, m in samples if t <= end] or [0]) for end in ends]
        r2 = time.perf_counter()
        train(epochs=args.epochs, name="two", nproc=2, **common)
        two = n * args.epochs / (time.perf_counter() - r2)
        print(f"{n} images x {args.epochs} epochs at {args.imgsz} px, batch {args.batch}, {args.workers} workers")
        print(f"1 process : {one:7.2f} images/s (epoch times: "
              + ", ".join(f"{row['time']:.1f}" for row in res.rows) + " s)")
        print(f"2 gloo    : {two:7.2f} images/s  ratio {two / one:.2f}x")
        print("peak RSS (1 process, MiB) up to the end of each epoch: " + ", ".join(f"{m:.0f}" for m in per_epoch)
              + f"  (total {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
