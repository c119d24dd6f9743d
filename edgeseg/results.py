"""The one result type that flows out of the runtime."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .errors import InputError
from .masks import Masks

__all__ = ["Results"]


@dataclass
class Results:
    """Detections of one image.

    - ``boxes``: (N, 4) float32, xyxy in source-image pixels
    - ``scores``: (N,) float32 confidences in 0-1
    - ``class_ids``: (N,) int64
    - ``masks``: :class:`~edgeseg.masks.Masks` (per-box crops) or None for detection-only models
    - ``names``: {class_id: name} of the model (all classes, not per detection; see :attr:`class_names`)
    - ``orig_shape``: (H, W) of the source image
    - ``path``: source file, if any; ``image``: the source BGR image, if kept (for :meth:`plot`)
    - ``speed``: milliseconds per stage: ``preprocess``, ``inference``, ``postprocess`` (streams add more)
    - ``frame_index``: the source's capture index of the frame (streams; None for single images)
    - ``frame_time``: ``time.monotonic()`` seconds when the frame was captured (streams; else None)
    - ``track_ids``: (N,) int64 track id per detection when a tracker ran (-1: no confirmed track), else None

    Boolean or integer indexing selects detections: ``res[res.scores > 0.5]``.
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    names: Dict[int, str]
    orig_shape: Tuple[int, int]
    masks: Optional[Masks] = None
    path: Optional[str] = None
    image: Optional[np.ndarray] = field(default=None, repr=False)
    speed: Dict[str, float] = field(default_factory=dict)
    frame_index: Optional[int] = None
    frame_time: Optional[float] = None
    track_ids: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.class_ids = np.asarray(self.class_ids, dtype=np.int64).reshape(-1)
        n = len(self.boxes)
        if len(self.scores) != n or len(self.class_ids) != n:
            raise InputError(
                f"Results: boxes, scores and class_ids must have one row per detection; "
                f"found {n}, {len(self.scores)}, {len(self.class_ids)}"
            )
        if self.masks is not None and len(self.masks) != n:
            raise InputError(f"Results: {n} detections but {len(self.masks)} masks")
        self.orig_shape = (int(self.orig_shape[0]), int(self.orig_shape[1]))
        if self.frame_index is not None:
            self.frame_index = int(self.frame_index)
        if self.frame_time is not None:
            self.frame_time = float(self.frame_time)
        if self.track_ids is not None:
            ids = np.asarray(self.track_ids)
            if ids.dtype.kind not in "iu" and not (ids.size == 0 and ids.dtype.kind == "f"):
                raise InputError(f"Results: track_ids must be integers (-1 for none), found dtype {ids.dtype}")
            self.track_ids = ids.astype(np.int64, copy=False).reshape(-1)
            if len(self.track_ids) != n:
                raise InputError(f"Results: {n} detections but {len(self.track_ids)} track_ids")

    # -- container protocol -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index: Any) -> "Results":
        idx = np.atleast_1d(np.arange(len(self))[index])
        return Results(
            boxes=self.boxes[idx],
            scores=self.scores[idx],
            class_ids=self.class_ids[idx],
            names=self.names,
            orig_shape=self.orig_shape,
            masks=self.masks[idx] if self.masks is not None else None,
            path=self.path,
            image=self.image,
            speed=dict(self.speed),
            frame_index=self.frame_index,
            frame_time=self.frame_time,
            track_ids=self.track_ids[idx] if self.track_ids is not None else None,
        )

    def __repr__(self) -> str:
        counts: Dict[str, int] = {}
        for n in self.class_names:
            counts[n] = counts.get(n, 0) + 1
        found = ", ".join(f"{v} {k}" for k, v in counts.items()) or "no detections"
        return f"Results({found}; {self.orig_shape[1]}x{self.orig_shape[0]}{', path=' + repr(self.path) if self.path else ''})"

    @property
    def class_names(self) -> List[str]:
        """Name of each detection's class (``class<id>`` when the model has no name for it)."""
        return [self.names.get(int(c), f"class{int(c)}") for c in self.class_ids]

    # -- export ---------------------------------------------------------------------------------
    def to_dict(self, masks: Optional[str] = "rle") -> Dict[str, Any]:
        """Plain-Python view: ``masks`` is ``"rle"`` (COCO RLE, compressed string counts),
        ``"rle-list"`` (uncompressed counts), ``"polygon"`` (source-pixel [[x, y], ...] lists) or None."""
        if masks not in ("rle", "rle-list", "polygon", None):
            raise InputError(f"masks must be 'rle', 'rle-list', 'polygon' or None, got {masks!r}")
        dets: List[Dict[str, Any]] = []
        mask_views: List[Any] = [None] * len(self)
        if self.masks is not None and masks is not None:
            if masks == "polygon":
                mask_views = [[np.round(p, 1).tolist() for p in polys] for polys in self.masks.polygons()]
            else:
                mask_views = self.masks.rle(compressed=masks == "rle")
        for i in range(len(self)):
            d: Dict[str, Any] = {
                "class_id": int(self.class_ids[i]),
                "class_name": self.names.get(int(self.class_ids[i]), f"class{int(self.class_ids[i])}"),
                "score": round(float(self.scores[i]), 5),
                "box": [round(float(v), 2) for v in self.boxes[i]],
            }
            if self.track_ids is not None:
                d["track_id"] = int(self.track_ids[i])
            if mask_views[i] is not None:
                d["polygons" if masks == "polygon" else "mask_rle"] = mask_views[i]
            dets.append(d)
        return {
            "path": self.path,
            "image_size": [self.orig_shape[0], self.orig_shape[1]],  # [h, w], as mask_rle.size (COCO)
            "detections": dets,
            "speed_ms": {k: round(float(v), 3) for k, v in self.speed.items()},
        }

    def to_json(self, masks: Optional[str] = "rle", **kwargs: Any) -> str:
        """:meth:`to_dict` as a JSON string (``kwargs`` go to :func:`json.dumps`)."""
        return json.dumps(self.to_dict(masks=masks), **kwargs)

    def plot(self, image: Optional[np.ndarray] = None, boxes: bool = True, masks: bool = True,
             labels: bool = True, alpha: float = 0.5, line_width: Optional[int] = None,
             trails: Optional[Dict[int, np.ndarray]] = None) -> np.ndarray:
        """An annotated copy of the source image (BGR uint8). Pass ``image`` when the result was
        made without keeping it. Tracked results are coloured by track id and labelled ``#id``;
        ``trails`` ({track id: (K, 2) points, oldest first}, kept by the tracker) draws their paths."""
        from .plotting import draw

        img = image if image is not None else self.image
        if img is None:
            raise InputError("Results.plot: this result holds no image; pass image=<the source BGR array>")
        if img.shape[:2] != self.orig_shape:
            raise InputError(f"Results.plot: image is {img.shape[1]}x{img.shape[0]}, expected {self.orig_shape[1]}x{self.orig_shape[0]}")
        return draw(img, self, boxes=boxes, masks=masks, labels=labels, alpha=alpha, line_width=line_width,
                    trails=trails)
