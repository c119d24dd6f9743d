"""Sequential vs pipelined ``edgeseg run``: throughput on a video file, frame age on a live source.

    python benchmarks/pipeline.py [--frames 300] [--size 640x480] [--threads N] [--live-fps 60]
                                  [--live-results 40] [--model M] [--no-save] [--live-only]

1. **Video file** (every frame is processed): a ``--frames``-frame video is generated from
   ``bus.jpg`` (shifted a little each frame) and run through the same Runtime and the same sinks
   (annotated video + JSON lines, unless ``--no-save``) twice: ``pipelined=False`` (read, preprocess,
   infer, postprocess, write, one after another in one thread) and the threaded pipeline. Prints
   FPS of both and the ratio pipelined / sequential (must be >= 1).
2. **Live source** (a thread makes frames at ``--live-fps``, faster than inference): prints the
   median / p90 / max *frame age* (capture to result ready) and FPS for
   - a naive sequential loop that reads the source in order (a driver/stream buffer is a FIFO: this
     is what ``while True: ok, img = cap.read(); model(img)`` does on an RTSP stream),
   - the pipelined stream with edgeseg's live source (grabber thread, newest frame only),
   - for reference, the sequential loop on edgeseg's live source (newest frame, no overlap).
   The pipelined age must be lower than the naive sequential one (which grows without bound).
   The three modes run in two alternating rounds, so a change of machine load hits all of them.

All numbers come from this run on this machine; compare ratios, not absolute FPS.
"""
from __future__ import annotations

import argparse
import json
import queue
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"
DEFAULT_MODEL = ASSETS / "models" / "yolov8n-seg-320-int8dyn.onnx"
BUS = ASSETS / "images" / "bus.jpg"


def make_video(path: Path, n: int, size: Tuple[int, int]) -> Path:
    import cv2

    img = cv2.resize(cv2.imread(str(BUS)), size)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, size)
    for i in range(n):
        w.write(np.roll(img, (3 * i) % size[0], axis=1))
    w.release()
    return path


def run_file(rt: Any, video: Path, out: Path, pipelined: bool, save: bool) -> Dict[str, Any]:
    from edgeseg.live.pipeline import stream
    from edgeseg.live.sinks import JsonSink, VideoSink

    tag = "pip" if pipelined else "seq"
    sinks = [VideoSink(out / f"{tag}.mp4"), JsonSink(out / f"{tag}.jsonl")] if save else []
    t0 = time.perf_counter()
    n = 0
    for _ in stream(rt, video, sinks=sinks, pipelined=pipelined):
        n += 1
    dt = time.perf_counter() - t0
    return {"frames": n, "seconds": dt, "fps": n / dt}


class Camera:
    """Makes a frame every 1/fps s into a FIFO, like a camera driver or an RTSP client buffer."""

    def __init__(self, img: np.ndarray, fps: float) -> None:
        self.img, self.period = img, 1.0 / fps
        self.fifo: "queue.Queue[Tuple[float, np.ndarray]]" = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        nxt = time.monotonic()
        i = 0
        while not self._stop.is_set():
            nxt += self.period
            time.sleep(max(0.0, nxt - time.monotonic()))
            self.fifo.put((time.monotonic(), np.roll(self.img, i % self.img.shape[1], axis=1)))
            i += 1

    # the capture interface LiveSource reads: (ok, image), oldest buffered frame first
    def read(self) -> Tuple[bool, Optional[np.ndarray]]:
        return True, self.fifo.get()[1]

    def release(self) -> None:
        self._stop.set()


def live_naive(rt: Any, img: np.ndarray, fps: float, results: int) -> Dict[str, Any]:
    cam = Camera(img, fps)
    ages = []
    t0 = time.perf_counter()
    for _ in range(results):
        ts, frame = cam.fifo.get()
        rt(frame)
        ages.append((time.monotonic() - ts) * 1e3)
    dt = time.perf_counter() - t0
    cam.release()
    return {"ages": ages, "fps": results / dt}


def live_edgeseg(rt: Any, img: np.ndarray, fps: float, results: int, pipelined: bool) -> Dict[str, Any]:
    from edgeseg.live.pipeline import stream
    from edgeseg.live.sources import LiveSource

    src = LiveSource(lambda: Camera(img, fps), f"simulated camera {fps:g} fps")
    t0 = time.perf_counter()
    ages = [r.speed["frame_age"] for r in stream(rt, src, max_frames=results, pipelined=pipelined)]
    dt = time.perf_counter() - t0
    return {"ages": ages, "fps": len(ages) / dt}


def pool(rounds: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Rounds of one mode together: all frame ages, mean FPS."""
    return {"ages": [a for r in rounds for a in r["ages"]], "fps": statistics.mean(r["fps"] for r in rounds)}


def age_row(name: str, r: Dict[str, Any]) -> str:
    a = r["ages"]
    return (f"| {name} | {r['fps']:.1f} | {statistics.median(a):.0f} | {float(np.percentile(a, 90)):.0f} "
            f"| {max(a):.0f} | {statistics.median(a[-5:]):.0f} |")


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--size", default="640x480", help="video frame size WxH")
    ap.add_argument("--threads", type=int, default=None, help="inference threads (default: the backend's)")
    ap.add_argument("--live-fps", type=float, default=60.0)
    ap.add_argument("--live-results", type=int, default=40)
    ap.add_argument("--no-save", action="store_true", help="run without sinks")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    ap.add_argument("--live-only", action="store_true", help="skip the video-file part (quick check)")
    args = ap.parse_args(argv)
    if not args.model.is_file() or not BUS.is_file():
        print(f"assets not found ({args.model}, {BUS}); nothing to measure", file=sys.stderr)
        return 2
    import cv2

    from edgeseg import Runtime

    w, h = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp, Runtime(args.model, threads=args.threads) as rt:
        out = Path(tmp)
        video = make_video(out / "in.mp4", 1 if args.live_only else args.frames, (w, h))
        rt(cv2.imread(str(BUS)))  # warm up
        if args.live_only:
            seq = pip = {"frames": 0, "seconds": 0.0, "fps": 1.0}
        else:
            seq = run_file(rt, video, out, pipelined=False, save=not args.no_save)
            pip = run_file(rt, video, out, pipelined=True, save=not args.no_save)
        ratio = pip["fps"] / seq["fps"]
        if not args.live_only:
            print(f"## Video file: {args.frames} frames {w}x{h}, {args.model.name}, "
                  f"sinks: {'none' if args.no_save else 'annotated video + JSON lines'}\n")
            print("| mode | frames | seconds | FPS |\n|---|---|---|---|")
            print(f"| sequential | {seq['frames']} | {seq['seconds']:.2f} | {seq['fps']:.1f} |")
            print(f"| pipelined | {pip['frames']} | {pip['seconds']:.2f} | {pip['fps']:.1f} |")
            print(f"\npipelined / sequential throughput: **{ratio:.2f}x**\n")

        img = cv2.resize(cv2.imread(str(BUS)), (w, h))
        # two alternating rounds, so a change of machine load does not favour one mode
        half = max(5, args.live_results // 2)
        runs: Dict[str, List[Dict[str, Any]]] = {"naive": [], "pipelined": [], "newest_seq": []}
        for _ in range(2):
            runs["naive"].append(live_naive(rt, img, args.live_fps, half))
            runs["pipelined"].append(live_edgeseg(rt, img, args.live_fps, half, pipelined=True))
            runs["newest_seq"].append(live_edgeseg(rt, img, args.live_fps, half, pipelined=False))
        naive, pipelined, newest_seq = (pool(runs[k]) for k in ("naive", "pipelined", "newest_seq"))
        print(f"## Live source at {args.live_fps:g} fps, {2 * half} results per mode (2 alternating rounds)\n")
        print("| mode | FPS | median age ms | p90 age ms | max age ms | last-5 median age ms |\n|---|---|---|---|---|---|")
        print(age_row("sequential, reads every frame in order (naive loop)", naive))
        print(age_row("pipelined, edgeseg live source (newest frame)", pipelined))
        print(age_row("sequential, edgeseg live source (newest frame)", newest_seq))
        age_ratio = statistics.median(naive["ages"]) / statistics.median(pipelined["ages"])
        print(f"\nnaive sequential / pipelined median frame age: **{age_ratio:.1f}x**")
    ok = ratio >= 1.0 and statistics.median(pipelined["ages"]) < statistics.median(naive["ages"])
    print("\nresult: " + ("OK (pipelined at least as fast, lower frame age)" if ok else "FAILED"))
    if args.json:
        args.json.write_text(json.dumps({"throughput_ratio": ratio, "sequential": seq, "pipelined": pip,
                                         "live": {k: {"fps": v["fps"], "ages_ms": v["ages"]} for k, v in
                                                  [("naive", naive), ("pipelined", pipelined), ("newest_sequential", newest_seq)]}},
                                        indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
