"""COCO instance-segmentation JSON: reading it for validation and converting it to the YOLO format.

A COCO file holds ``images`` (id, file_name, height, width), ``categories`` (id, name) and
``annotations`` (image_id, category_id, segmentation as polygons or RLE, bbox ``[x, y, w, h]``,
area, iscrowd). Category ids may have gaps (COCO uses 1-90); class indices are their sorted order.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from ...errors import DatasetError
from .dataset import Dataset, ImageLabels, LabelIssue

__all__ = ["load_coco", "convert_coco", "merge_polygons", "to_coco", "ConvertReport"]


def _read_json(path: Path) -> Dict[str, Any]:
    if not path.is_file():
        raise DatasetError(f"COCO annotation file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise DatasetError(f"{path}: expected a COCO instances file with 'images', 'annotations' and 'categories' lists, found {found}")
    return data


def _image_dir(json_path: Path, images: Optional[Union[str, Path]], first: Optional[str]) -> Path:
    """The folder holding the images: ``images`` if given, else the first usual place that has them."""
    if images is not None:
        d = Path(images)
        if not d.is_dir():
            raise DatasetError(f"images folder not found: {d}")
        return d
    parent = json_path.resolve().parent
    split = json_path.stem.split("_")[-1]  # instances_val2017 -> val2017
    candidates = [parent / "images", parent, parent.parent / split, parent.parent / "images" / split, parent / "images" / split]
    for d in candidates:
        if first is None or (d / first).is_file():
            return d
    raise DatasetError(
        f"{json_path}: cannot find its images (looked for {first!r} in "
        + ", ".join(str(c) for c in candidates) + "); pass the folder with --images"
    )


def _segments(seg: Any) -> Tuple[List[np.ndarray], Optional[Dict[str, Any]], Optional[str]]:
    """(polygons, rle, problem) of an annotation's ``segmentation``."""
    if isinstance(seg, dict):
        if "counts" not in seg or "size" not in seg:
            return [], None, "RLE segmentation needs 'counts' and 'size'"
        return [], seg, None
    if isinstance(seg, list):
        polys = []
        for p in seg:
            try:
                arr = np.asarray(p, dtype=np.float64).reshape(-1)
            except (TypeError, ValueError):
                return [], None, "polygon coordinates must be numbers"
            if len(arr) % 2:
                return [], None, f"odd number of polygon coordinates ({len(arr)})"
            if len(arr) < 6:
                return [], None, f"a polygon needs at least 3 points (6 coordinates), found {len(arr)}"
            if not np.isfinite(arr).all():
                return [], None, "polygon coordinates contain NaN or infinity"
            polys.append(arr.reshape(-1, 2))
        return polys, None, None
    return [], None, f"segmentation must be a polygon list or an RLE dict, found {type(seg).__name__}"


def load_coco(path: Union[str, Path], images: Optional[Union[str, Path]] = None) -> Dataset:
    """Read a COCO instances JSON for validation (polygons, RLE and crowd regions kept)."""
    json_path = Path(path)
    data = _read_json(json_path)
    cats = sorted(data["categories"], key=lambda c: int(c["id"]))
    if not cats:
        raise DatasetError(f"{json_path}: 'categories' is empty")
    cat_index = {int(c["id"]): i for i, c in enumerate(cats)}
    names = {i: str(c.get("name", f"class{c['id']}")) for i, c in enumerate(cats)}
    imgs = sorted(data["images"], key=lambda im: int(im["id"]))
    if not imgs:
        raise DatasetError(f"{json_path}: 'images' is empty")
    img_dir = _image_dir(json_path, images, imgs[0].get("file_name"))
    by_image: Dict[int, List[Dict[str, Any]]] = {}
    issues: List[LabelIssue] = []
    where = str(json_path)
    for ann in data["annotations"]:
        aid = ann.get("id", "?")
        if int(ann.get("category_id", -1)) not in cat_index:
            issues.append(LabelIssue(where, 0, f"annotation {aid}: category_id {ann.get('category_id')} is not in 'categories'"))
            continue
        by_image.setdefault(int(ann.get("image_id", -1)), []).append(ann)
    known = {int(im["id"]) for im in imgs}
    for image_id in sorted(set(by_image) - known):
        issues.append(LabelIssue(where, 0, f"{len(by_image[image_id])} annotation(s) refer to image_id {image_id}, which is not in 'images'"))
    items: List[ImageLabels] = []
    for im in imgs:
        image_id = int(im["id"])
        cls, segs, rles, boxes, areas, crowd = [], [], [], [], [], []
        for ann in by_image.get(image_id, []):
            aid = ann.get("id", "?")
            polys, rle, problem = _segments(ann.get("segmentation", []))
            bbox = ann.get("bbox")
            try:
                box = np.asarray(bbox, np.float64).reshape(4) if bbox is not None else None
            except (TypeError, ValueError):
                problem = problem or f"bbox must be 4 numbers [x, y, w, h], found {bbox!r}"
                box = None
            if problem is None and not polys and rle is None:
                if box is None:
                    problem = "has neither a segmentation nor a bbox"
                else:  # a box-only annotation: its mask is its box, as COCO rasterizes boxes
                    from .polygon import box_polygon

                    polys = [box_polygon(box)]
            if problem:
                issues.append(LabelIssue(where, 0, f"annotation {aid} (image {image_id}): {problem}"))
                continue
            if box is None:
                box = np.full(4, np.nan)
            cls.append(cat_index[int(ann["category_id"])])
            segs.append(polys)
            rles.append(rle)
            boxes.append(box)
            areas.append(float(ann["area"]) if "area" in ann else np.nan)
            crowd.append(bool(ann.get("iscrowd", 0)))
        size = (int(im["height"]), int(im["width"])) if "height" in im and "width" in im else None
        items.append(ImageLabels(
            path=img_dir / str(im["file_name"]), image_id=image_id, class_ids=np.array(cls, np.int64),
            segments=segs, normalized=False, rles=rles if any(r is not None for r in rles) else None,
            boxes=np.array(boxes, np.float64).reshape(-1, 4), areas=np.array(areas, np.float64),
            iscrowd=np.array(crowd, bool), size=size,
        ))
    return Dataset(names=names, items=items, issues=issues, category_ids=[int(c["id"]) for c in cats],
                   source=json_path, kind="coco")


# -- conversion to YOLO --------------------------------------------------------------------------

def merge_polygons(polygons: List[np.ndarray]) -> np.ndarray:
    """Join an object's polygons into one outline for the YOLO format (one polygon per line).

    Each next part hangs off the point of the previous part nearest to it by a bridge walked
    there and back, so every part is traced once and each bridge twice (bridges enclose no area).
    ``polygons``: (K_i, 2) arrays. Returns (K, 2).
    """
    polys = [np.asarray(p, np.float64).reshape(-1, 2) for p in polygons if len(p)]
    if len(polys) <= 1:
        return polys[0] if polys else np.zeros((0, 2))

    def walk(i: int, entry: int) -> List[np.ndarray]:
        ring = np.roll(polys[i], -entry, axis=0)
        if i == len(polys) - 1:
            return [ring, ring[:1]]
        d = ((ring[:, None, :] - polys[i + 1][None, :, :]) ** 2).sum(-1)
        a, b = np.unravel_index(int(np.argmin(d)), d.shape)
        return [ring[: a + 1]] + walk(i + 1, int(b)) + [ring[a:], ring[:1]]

    return np.concatenate(walk(0, 0))


class ConvertReport(dict):
    """What :func:`convert_coco` wrote: images, labels, instances, skipped (crowd), issues, yaml."""


def _mask_polygons(rle: Dict[str, Any], h: int, w: int) -> List[np.ndarray]:
    import cv2

    from .rle import rle_to_crop

    crop, x0, y0 = rle_to_crop(rle, h, w)
    if crop.size == 0:
        return []
    contours, _ = cv2.findContours(crop.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1, 2).astype(np.float64) + (x0, y0) for c in contours if len(c) >= 3]


def _fmt(v: float) -> str:
    return f"{v:.8g}"


def convert_coco(path: Union[str, Path], images: Optional[Union[str, Path]], out: Union[str, Path],
                 split: Optional[str] = None, overwrite: bool = False, copy_images: bool = True,
                 progress: bool = False) -> ConvertReport:
    """Write a COCO instances JSON as a YOLO segmentation dataset under ``out``.

    Layout: ``out/images/<split>/``, ``out/labels/<split>/*.txt`` and ``out/<split>.yaml``
    (``split`` defaults to the JSON name after its last ``_``: ``instances_val2017`` -> ``val2017``).
    Crowd regions are skipped (the YOLO format cannot hold them) and counted; multi-part objects
    are joined with :func:`merge_polygons`; RLE objects are traced with OpenCV. Images are
    hard-linked when possible, else copied. The folder appears atomically: it is built beside
    ``out`` and renamed into place; an existing non-empty ``out`` needs ``overwrite``.
    """
    import yaml

    from ...io import atomic_dir

    json_path = Path(path)
    ds = load_coco(json_path, images)
    split = split or json_path.stem.split("_")[-1]
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise DatasetError(f"output folder {out} exists and is not empty; choose a new folder or pass --overwrite")
    missing = [it.path for it in ds.items if not it.path.is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} image(s) listed in {json_path} are missing, e.g. {missing[0]}")
    report = ConvertReport(images=0, labels=0, instances=0, crowd_skipped=0, issues=[str(i) for i in ds.issues])
    with atomic_dir(out) as tmp:
        img_dir, lbl_dir = tmp / "images" / split, tmp / "labels" / split
        img_dir.mkdir(parents=True)
        lbl_dir.mkdir(parents=True)
        items: Any = ds.items
        if progress:
            from tqdm import tqdm

            items = tqdm(items, desc="convert", unit="img", leave=False)
        for it in items:
            if it.size is None:
                raise DatasetError(f"{json_path}: image {it.image_id} has no height/width")
            h, w = it.size
            lines = []
            for k in range(len(it)):
                if it.iscrowd is not None and it.iscrowd[k]:
                    report["crowd_skipped"] += 1
                    continue
                rle = it.rles[k] if it.rles is not None else None
                polys = _mask_polygons(rle, h, w) if rle is not None else it.segments[k]
                poly = merge_polygons(polys)
                if len(poly) < 3:
                    report["issues"].append(f"{json_path}: image {it.image_id}: an object of class {it.class_ids[k]} has an empty mask; skipped")
                    continue
                norm = np.clip(poly / np.array([w, h], np.float64), 0.0, 1.0)
                lines.append(" ".join([str(int(it.class_ids[k]))] + [_fmt(v) for v in norm.ravel()]))
            dst = img_dir / it.path.name
            if copy_images:
                try:
                    os.link(it.path, dst)
                except OSError:
                    shutil.copy2(it.path, dst)
            if lines:
                (lbl_dir / (it.path.stem + ".txt")).write_text("\n".join(lines) + "\n", encoding="utf-8")
                report["labels"] += 1
            report["images"] += 1
            report["instances"] += len(lines)
        cfg = {"path": ".", "train": f"images/{split}", "val": f"images/{split}", "names": dict(ds.names)}
        (tmp / f"{split}.yaml").write_text(
            "# YOLO segmentation dataset converted by `edgeseg data convert-coco` from " + json_path.name + "\n"
            + yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), encoding="utf-8")
    report["yaml"] = str(out / f"{split}.yaml")
    return report


def to_coco(ds: Dataset, progress: bool = False) -> Dict[str, Any]:
    """A COCO instances dict of a dataset's ground truth, to score ``--save-json`` results with
    other tools: image ids as :func:`edgeseg.eval.validate.validate` writes them, category ids = class
    indices (COCO JSON datasets keep theirs), polygons in pixels, ``bbox`` the polygon bounds,
    ``area`` the mask area (COCO's rasterization). Images are read for their size when the
    labels do not state it.
    """
    from ...io import read_image

    images, anns = [], []
    items = ds.items
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc="export", unit="img", leave=False)
    for it in items:
        if it.size is not None:
            h, w = it.size
        else:
            h, w = read_image(it.path).shape[:2]
        images.append({"id": it.image_id, "file_name": it.path.name, "height": int(h), "width": int(w)})
        tg = it.targets(h, w)
        segs = it.pixel_segments(h, w)
        for k in range(len(it)):
            if it.rles is not None and it.rles[k] is not None:
                seg: Any = it.rles[k]
            else:
                seg = [p.ravel().tolist() for p in segs[k]]
            anns.append({"id": len(anns) + 1, "image_id": it.image_id, "category_id": ds.category_id(int(tg.class_ids[k])),
                         "segmentation": seg, "area": float(tg.areas[k]), "bbox": [float(v) for v in tg.boxes[k]],
                         "iscrowd": int(tg.iscrowd[k])})
    cats = [{"id": ds.category_id(k), "name": name} for k, name in sorted(ds.names.items())]
    return {"images": images, "annotations": anns, "categories": cats}
