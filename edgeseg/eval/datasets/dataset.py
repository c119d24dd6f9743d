"""The dataset types shared by the YOLO and COCO readers.

A :class:`Dataset` is a list of :class:`ImageLabels` (one per image, in evaluation order) plus the
class names and every :class:`LabelIssue` met while reading. Labels stay light (polygons, not
masks); :meth:`ImageLabels.targets` turns one image's labels into pixel boxes and crop masks when
its size is known.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from .polygon import CropMask, polygon_masks, union_masks

__all__ = ["LabelIssue", "ImageLabels", "Targets", "Dataset"]


@dataclass(frozen=True)
class LabelIssue:
    """A label that was skipped: ``file:line: reason`` (line 0 when it concerns the whole file)."""

    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}" if self.line else f"{self.path}: {self.reason}"


@dataclass
class Targets:
    """Ground truth of one image in source pixels, ready for matching.

    - ``class_ids``: (G,) int64 contiguous class index (0..nc-1)
    - ``boxes``: (G, 4) float64 ``[x, y, w, h]`` (COCO box convention)
    - ``masks``: list of G :data:`~edgeseg.eval.datasets.polygon.CropMask` (bool crop, x0, y0)
    - ``areas``: (G,) float64 area used for COCO's area ranges
    - ``iscrowd``: (G,) bool
    """

    class_ids: np.ndarray
    boxes: np.ndarray
    masks: List[CropMask]
    areas: np.ndarray
    iscrowd: np.ndarray

    def __len__(self) -> int:
        return len(self.class_ids)


@dataclass
class ImageLabels:
    """Labels of one image as read from disk.

    - ``path``: image file; ``image_id``: int id (COCO id, or from the file name)
    - ``class_ids``: (G,) int64 contiguous class index
    - ``segments``: per instance a list of (K, 2) float64 polygons (normalized 0-1 when
      ``normalized``, else pixels); an RLE instance has an empty list and its ``rles`` entry
    - ``rles``: per instance a COCO RLE dict or None (COCO JSON only)
    - ``boxes``: (G, 4) float64 ``[x, y, w, h]`` pixels from the annotation, or None (then the
      polygons' bounds are used, as for YOLO labels)
    - ``areas``: (G,) float64 COCO ``area`` fields, or None (then mask areas are used)
    - ``iscrowd``: (G,) bool; ``size``: (H, W) when the annotation file states it
    """

    path: Path
    image_id: int
    class_ids: np.ndarray
    segments: List[List[np.ndarray]]
    normalized: bool = True
    rles: Optional[List[Optional[Dict[str, Any]]]] = None
    boxes: Optional[np.ndarray] = None
    areas: Optional[np.ndarray] = None
    iscrowd: Optional[np.ndarray] = None
    size: Optional[Tuple[int, int]] = None

    def __len__(self) -> int:
        return len(self.class_ids)

    def pixel_segments(self, h: int, w: int) -> List[List[np.ndarray]]:
        """Polygons in source pixels (float64), scaled by (w, h) for normalized labels."""
        if not self.normalized:
            return self.segments
        scale = np.array([w, h], np.float64)
        return [[p * scale for p in polys] for polys in self.segments]

    def targets(self, h: int, w: int) -> Targets:
        """Boxes, crop masks (COCO rasterization), areas and crowd flags at image size (h, w)."""
        return _targets(self, h, w)


def _targets(labels: ImageLabels, h: int, w: int) -> Targets:
    from .rle import rle_to_crop

    n = len(labels)
    segs = labels.pixel_segments(h, w)
    masks: List[CropMask] = []
    boxes = np.zeros((n, 4), np.float64)
    areas = np.zeros(n, np.float64)
    # every polygon of the image in one vectorized pass, then parts joined per object
    flat = [p for i in range(n) for p in segs[i]]
    owner = [i for i in range(n) for _ in segs[i]]
    parts = polygon_masks(flat, h, w)
    per_obj: List[List[CropMask]] = [[] for _ in range(n)]
    for i, m in zip(owner, parts):
        per_obj[i].append(m)
    for i in range(n):
        rle = labels.rles[i] if labels.rles is not None else None
        mask = rle_to_crop(rle, h, w) if rle is not None else union_masks(per_obj[i])
        masks.append(mask)
        areas[i] = float(np.count_nonzero(mask[0]))
        if segs[i]:  # polygon bounds, as COCO's converters and Ultralytics make the box
            pts = np.concatenate(segs[i])
            x0, y0 = pts.min(axis=0)
            x1, y1 = pts.max(axis=0)
            boxes[i] = (x0, y0, x1 - x0, y1 - y0)
        elif mask[0].size:  # RLE: the mask's tight box
            boxes[i] = (mask[1], mask[2], mask[0].shape[1], mask[0].shape[0])
    if labels.boxes is not None:  # the annotation's own bbox wins where it has one
        given = np.asarray(labels.boxes, np.float64).reshape(n, 4)
        ok = np.isfinite(given).all(axis=1)
        boxes[ok] = given[ok]
    if labels.areas is not None:
        given_a = np.asarray(labels.areas, np.float64).reshape(n)
        ok_a = np.isfinite(given_a)
        areas[ok_a] = given_a[ok_a]
    iscrowd = np.zeros(n, bool) if labels.iscrowd is None else np.asarray(labels.iscrowd, bool).reshape(n)
    return Targets(np.asarray(labels.class_ids, np.int64).reshape(n), boxes, masks, areas, iscrowd)


@dataclass
class Dataset:
    """An evaluation split: images with their labels, class names and the issues met reading it.

    - ``names``: {class index: name}, contiguous from 0
    - ``items``: one :class:`ImageLabels` per image, sorted by ``image_id``
    - ``issues``: skipped labels, each ``file:line: reason``
    - ``category_ids``: COCO category id of each class index (COCO JSON; identity for YOLO)
    - ``source``: the YAML or JSON file it came from; ``kind``: "yolo" or "coco"
    """

    names: Dict[int, str]
    items: List[ImageLabels]
    issues: List[LabelIssue] = field(default_factory=list)
    category_ids: Optional[List[int]] = None
    source: Optional[Path] = None
    kind: str = "yolo"

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[ImageLabels]:
        return iter(self.items)

    def __getitem__(self, i: int) -> ImageLabels:
        return self.items[i]

    @property
    def num_instances(self) -> int:
        return int(sum(len(it) for it in self.items))

    def category_id(self, class_index: int) -> int:
        """The COCO category id written to result files for a class index."""
        if self.category_ids is None:
            return int(class_index)
        return int(self.category_ids[class_index])
