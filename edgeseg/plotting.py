"""Drawing results on images (OpenCV). Mask blending touches only each detection's box."""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Optional, Tuple

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .results import Results

# A 20-colour palette (BGR), distinct on dark and light scenes.
_PALETTE_HEX = (
    "FF3838 FF9D97 FF701F FFB21D CFD231 48F90A 92CC17 3DDB86 1A9334 00D4BB "
    "2C99A8 00C2FF 344593 6473FF 0018EC 8438FF 520085 CB38FF FF95C8 FF37C7"
).split()
PALETTE = [tuple(int(h[i: i + 2], 16) for i in (4, 2, 0)) for h in _PALETTE_HEX]


def color(class_id: int) -> Tuple[int, int, int]:
    return PALETTE[int(class_id) % len(PALETTE)]  # type: ignore[return-value]


def draw(image: np.ndarray, res: "Results", boxes: bool = True, masks: bool = True, labels: bool = True,
         alpha: float = 0.5, line_width: Optional[int] = None,
         trails: Optional[Dict[int, np.ndarray]] = None) -> np.ndarray:
    """Return an annotated copy of ``image`` (BGR uint8, the result's source image). Tracked results
    (``res.track_ids``) are coloured per track and labelled ``#id``; ``trails`` maps a track id to its
    recent (K, 2) positions in source pixels, drawn as a polyline."""
    import cv2

    out = image.copy()
    lw = line_width or max(round(sum(out.shape[:2]) / 2 * 0.003), 2)
    tids = res.track_ids if res.track_ids is not None else np.full(len(res), -1, np.int64)
    keys = [int(t) if t >= 0 else int(c) for t, c in zip(tids, res.class_ids)]  # colour: track, else class
    if masks and res.masks is not None:
        for cid, crop, (x0, y0) in zip(keys, res.masks.crops, res.masks.offsets):
            if crop.size == 0:
                continue
            region = out[y0: y0 + crop.shape[0], x0: x0 + crop.shape[1]]
            col = np.array(color(cid), np.float32)
            sel = region[crop].astype(np.float32)
            region[crop] = (sel * (1 - alpha) + col * alpha).astype(np.uint8)
    for tid, pts in (trails or {}).items():
        if len(pts) >= 2:
            poly = np.round(np.asarray(pts, np.float32)).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(out, [poly], False, color(tid), max(lw - 1, 1), cv2.LINE_AA)
    if boxes or labels:
        font_scale = lw / 3
        thick = max(lw - 1, 1)
        for box, key, tid, score, name in zip(res.boxes, keys, tids, res.scores, res.class_names):
            c = color(key)
            p1, p2 = (int(box[0]), int(box[1])), (int(box[2]), int(box[3]))
            if boxes:
                cv2.rectangle(out, p1, p2, c, lw, cv2.LINE_AA)
            if labels:
                text = f"#{tid} {name} {score:.2f}" if tid >= 0 else f"{name} {score:.2f}"
                (tw, th), _ = cv2.getTextSize(text, 0, font_scale, thick)
                above = p1[1] - th - 3 >= 0
                x = max(min(p1[0], out.shape[1] - tw), 0)  # keep the label inside the image
                q1, q2 = (x, p1[1]), (x + tw, p1[1] - th - 3 if above else p1[1] + th + 3)
                cv2.rectangle(out, q1, q2, c, -1, cv2.LINE_AA)
                cv2.putText(out, text, (x, p1[1] - 2 if above else p1[1] + th + 2), 0, font_scale,
                            (255, 255, 255), thick, cv2.LINE_AA)
    return out
