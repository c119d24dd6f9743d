"""Datasets for validation: the YOLO segmentation format and COCO instance JSON (numpy + OpenCV).

    >>> from edgeseg.eval.datasets import load_dataset
    >>> ds = load_dataset("coco128-seg.yaml", split="val")     # or "instances_val2017.json"
    >>> len(ds), ds.names[0], [str(i) for i in ds.issues]      # skipped labels as file:line: reason
    >>> t = ds[0].targets(h, w)   # pixel boxes [x, y, w, h], crop masks rasterized the COCO way
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from ...errors import DatasetError
from .coco import convert_coco, load_coco, merge_polygons, to_coco
from .dataset import Dataset, ImageLabels, LabelIssue, Targets
from .polygon import CropMask, polygon_mask, polygons_mask
from .yolo import load_yolo, parse_label_file

__all__ = [
    "load_dataset", "load_yolo", "load_coco", "convert_coco", "merge_polygons", "to_coco", "parse_label_file",
    "Dataset", "ImageLabels", "LabelIssue", "Targets", "CropMask", "polygon_mask", "polygons_mask",
]


def load_dataset(data: Union[str, Path, Dataset], split: str = "val", images: Optional[Union[str, Path]] = None) -> Dataset:
    """A dataset from a YOLO dataset YAML (``split`` picks train/val/test) or a COCO instances
    JSON (``images``: its image folder, found automatically in the usual places when omitted)."""
    if isinstance(data, Dataset):
        return data
    p = Path(data)
    suffix = p.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return load_yolo(p, split)
    if suffix == ".json":
        return load_coco(p, images)
    raise DatasetError(f"{p}: expected a YOLO dataset .yaml or a COCO instances .json, found '{suffix or p.name}'")
