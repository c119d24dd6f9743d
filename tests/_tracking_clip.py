"""A synthetic tracking clip with ground truth: objects on known paths that cross and occlude.

Used by tests/test_tracking*.py and benchmarks/tracking.py (``edgeseg data synth --video`` may
replace the renderer later). Everything is seeded: the same arguments give the same clip.

Scene (640x360, 30 fps, ``N_FRAMES`` frames); later objects are drawn in front of earlier ones:

====  =====  ========  ===============================================================
id    class  size      path
====  =====  ========  ===============================================================
1     0      64x150    a person, left to right at y=200 (x 40 -> 600)
2     0      64x150    a person, right to left at y=215 (x 600 -> 40): passes in front of 1
3     0      80x190    a person nearer the camera, from (560,60) down to (420,330): passes in front of 2
4     0      50x120    a person, from frame 20 top to bottom at x=160 (y -40 -> 420: leaves the frame)
====  =====  ========  ===============================================================

Known analytics (box centres): line ``h`` (0,180)-(640,180), drawn left to right: 3 and 4 move down
across it: in 2, out 0. Line ``v`` (320,0)-(320,360), drawn downwards (in is right to left): 2 in,
1 out. Zone ``right`` = x 400-640: 2 and 3 start inside, 2 leaves at frame 35.4 (dwell 1.18 s),
1 enters at frame 63.6: 3 entered, 1 exited, 2 inside at the end.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

W, H, FPS, N_FRAMES = 640, 360, 30.0, 100

#: id -> (class, (w, h), [(frame, cx, cy), ...] keyframes, first frame)
OBJECTS: Dict[int, Tuple[int, Tuple[int, int], List[Tuple[float, float, float]], int]] = {
    1: (0, (64, 150), [(0, 40, 200), (N_FRAMES - 1, 600, 200)], 0),
    2: (0, (64, 150), [(0, 600, 215), (N_FRAMES - 1, 40, 215)], 0),
    3: (0, (80, 190), [(0, 560, 60), (N_FRAMES - 1, 420, 330)], 0),
    4: (0, (50, 120), [(20, 160, -40), (80, 160, 420)], 20),
}
LINES = {"h": "h=0,180,640,180", "v": "v=320,0,320,360"}
ZONES = {"right": "right=400,0,640,0,640,360,400,360"}
EXPECTED_LINES = {"h": {"in": 2, "out": 0}, "v": {"in": 1, "out": 1}}
EXPECTED_ZONES = {"right": {"inside": 2, "entered": 3, "exited": 1, "mean_dwell_s": 35.4 / FPS}}


def _box(obj: int, f: int) -> Optional[np.ndarray]:
    _, (w, h), keys, first = OBJECTS[obj]
    if f < first or f > keys[-1][0]:
        return None
    fr = [k[0] for k in keys]
    cx = float(np.interp(f, fr, [k[1] for k in keys]))
    cy = float(np.interp(f, fr, [k[2] for k in keys]))
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def _area(b: np.ndarray) -> float:
    return float(max(b[2] - b[0], 0) * max(b[3] - b[1], 0))


def _clip(b: np.ndarray) -> np.ndarray:
    return np.array([max(b[0], 0), max(b[1], 0), min(b[2], W), min(b[3], H)])


def ground_truth(n_frames: int = N_FRAMES) -> List[Dict[str, np.ndarray]]:
    """Per frame: ``ids`` (K,), ``boxes`` (K, 4) xyxy clipped to the image, ``classes``, ``visible``
    (fraction of the box neither outside the image nor hidden by objects in front). Objects less than
    30 % visible are not in the ground truth of that frame (nothing can see them)."""
    out = []
    for f in range(n_frames):
        ids, boxes, classes, vis = [], [], [], []
        full = {o: _box(o, f) for o in OBJECTS}
        for o, b in full.items():
            if b is None:
                continue
            c = _clip(b)
            if _area(c) <= 0:
                continue
            hidden = 0.0
            for front in [k for k in OBJECTS if k > o and full[k] is not None]:
                fb = _clip(full[front])  # type: ignore[arg-type]
                inter = np.array([max(c[0], fb[0]), max(c[1], fb[1]), min(c[2], fb[2]), min(c[3], fb[3])])
                hidden = max(hidden, _area(inter))
            v = (_area(c) - hidden) / _area(b)
            if v < 0.3:
                continue
            ids.append(o)
            boxes.append(c)
            classes.append(OBJECTS[o][0])
            vis.append(v)
        out.append({"ids": np.array(ids, np.int64), "boxes": np.array(boxes, np.float64).reshape(-1, 4),
                    "classes": np.array(classes, np.int64), "visible": np.array(vis)})
    return out


def noisy_detections(gt: List[Dict[str, np.ndarray]], seed: int = 0, noise: float = 0.03,
                     dropout: float = 0.05, false_rate: float = 0.05) -> List[Dict[str, np.ndarray]]:
    """Detector-like output from the ground truth: box edges jittered by ``noise`` x size, scores
    0.55-0.95 for objects at least 70 % visible, 0.3-0.6 from 45 % and 0.12-0.24 (ByteTrack's low
    band) for objects 30-45 % visible, ``dropout`` of detections missing at random, and a spurious box in ``false_rate`` of
    frames. Per frame: ``boxes``, ``scores``, ``classes``, ``gt`` (the true id, -1 for false boxes)."""
    rng = np.random.default_rng(seed)
    out = []
    for fr in gt:
        boxes, scores, classes, truth = [], [], [], []
        for o, b, c, v in zip(fr["ids"], fr["boxes"], fr["classes"], fr["visible"]):
            if rng.random() < dropout:
                continue
            size = np.array([b[2] - b[0], b[3] - b[1]] * 2)
            boxes.append(b + rng.normal(0, noise, 4) * size)
            lo, hi = (0.55, 0.95) if v >= 0.7 else (0.3, 0.6) if v >= 0.45 else (0.12, 0.24)
            scores.append(rng.uniform(lo, hi))
            classes.append(c)
            truth.append(o)
        if rng.random() < false_rate:
            x, y = rng.uniform(0, W - 80), rng.uniform(0, H - 80)
            boxes.append(np.array([x, y, x + rng.uniform(20, 80), y + rng.uniform(20, 80)]))
            scores.append(rng.uniform(0.3, 0.5))
            classes.append(0)
            truth.append(-1)
        order = rng.permutation(len(boxes))  # detectors give no order
        out.append({"boxes": np.array(boxes, np.float64).reshape(-1, 4)[order],
                    "scores": np.array(scores)[order] if scores else np.zeros(0),
                    "classes": np.array(classes, np.int64)[order] if classes else np.zeros(0, np.int64),
                    "gt": np.array(truth, np.int64)[order] if truth else np.zeros(0, np.int64)})
    return out


def sprites_from_reference(image: np.ndarray, reference: Dict[str, Any]) -> Dict[int, np.ndarray]:
    """Cut-outs (BGRA, alpha = the instance mask) for the clip's objects from a real photo and its
    reference detections (``../shared/assets/reference/*__bus.json``): the two best-scored whole
    persons, each used twice (mirrored the second time)."""
    from edgeseg.masks import rle_decode

    people = []
    for det in sorted(reference["detections"], key=lambda d: -d["score"]):
        if det["class_id"] != 0:
            continue
        x0, y0, x1, y1 = (int(round(v)) for v in det["xyxy"])
        mask = rle_decode(det["mask_rle"])[y0:y1, x0:x1]
        people.append(np.dstack([image[y0:y1, x0:x1], (mask * 255).astype(np.uint8)]))
    if len(people) < 2:
        raise ValueError(f"the reference needs 2 persons, found {len(people)}")
    return {1: people[0], 2: people[1], 3: people[0][:, ::-1].copy(), 4: people[1][:, ::-1].copy()}


def render(n_frames: int = N_FRAMES, sprites: Optional[Dict[int, np.ndarray]] = None, seed: int = 0) -> List[np.ndarray]:
    """BGR frames of the scene: a textured background and each object as a filled shape, or as
    ``sprites[object id]`` (BGRA, alpha = mask) resized to its box."""
    import cv2

    rng = np.random.default_rng(seed)
    bg = cv2.GaussianBlur(rng.integers(60, 200, (H, W, 3), dtype=np.uint8), (0, 0), 6)
    colours = {1: (40, 40, 220), 2: (220, 60, 40), 3: (40, 200, 60), 4: (200, 200, 40)}
    frames = []
    for f in range(n_frames):
        img = bg.copy()
        for o in OBJECTS:
            b = _box(o, f)
            if b is None:
                continue
            x0, y0, x1, y1 = (int(round(v)) for v in b)
            if sprites is not None and o in sprites:
                spr = cv2.resize(sprites[o], (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
                sx0, sy0 = max(-x0, 0), max(-y0, 0)
                sx1, sy1 = spr.shape[1] - max(x1 - W, 0), spr.shape[0] - max(y1 - H, 0)
                if sx1 <= sx0 or sy1 <= sy0:
                    continue
                part = spr[sy0:sy1, sx0:sx1]
                region = img[y0 + sy0: y0 + sy1, x0 + sx0: x0 + sx1]
                a = part[:, :, 3:4].astype(np.float32) / 255.0
                region[:] = (part[:, :, :3] * a + region * (1 - a)).astype(np.uint8)
            else:
                cv2.rectangle(img, (x0, y0), (x1, y1), colours[o], -1)
        frames.append(img)
    return frames
