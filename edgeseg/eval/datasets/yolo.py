"""The YOLO segmentation dataset format: a YAML file plus one polygon label file per image.

Dataset YAML::

    path: coco128-seg          # dataset root, relative to this file's folder (default: that folder)
    train: images/train2017    # a folder of images, a .txt list of image paths, or a list of those
    val: images/train2017
    names: {0: person, 1: bicycle, ...}   # or a list

Labels live beside the images with ``images`` replaced by ``labels`` in the path and a ``.txt``
suffix; one object per line: ``class x1 y1 x2 y2 ...`` with polygon corners normalized to 0-1
(a line with exactly four numbers is a box ``class cx cy w h``). Malformed lines are reported as
:class:`~edgeseg.eval.datasets.dataset.LabelIssue` (``file:line: reason``), counted and skipped.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple, Union

import numpy as np

from ...errors import DatasetError
from ...io import IMAGE_SUFFIXES
from .dataset import Dataset, ImageLabels, LabelIssue

__all__ = ["load_yolo", "parse_label_file", "label_path", "image_ids", "read_dataset_yaml"]

#: tolerance for coordinates just outside 0-1 from rounding in label writers; they are clipped
_EPS = 1e-6


def read_dataset_yaml(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a dataset YAML with ``yaml.safe_load``; ``path`` resolved against the file's folder."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"dataset file not found: {p} (expected a YOLO dataset .yaml or a COCO .json)")
    try:
        cfg = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{p}: not valid YAML: {exc}") from exc
    if not isinstance(cfg, dict):
        raise DatasetError(f"{p}: expected a mapping with path/train/val/names, found {type(cfg).__name__}")
    root = Path(cfg.get("path") or ".")
    if not root.is_absolute():
        root = p.resolve().parent / root
    cfg["path"] = root
    return cfg


def _names(cfg: Dict[str, Any], where: Path) -> Dict[int, str]:
    names = cfg.get("names")
    if isinstance(names, dict):
        try:
            out = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"{where}: 'names' keys must be class ids (0, 1, ...), found {list(names)[:5]}") from exc
    elif isinstance(names, (list, tuple)):
        out = {i: str(v) for i, v in enumerate(names)}
    elif names is None and isinstance(cfg.get("nc"), int):
        out = {i: f"class{i}" for i in range(cfg["nc"])}
    else:
        raise DatasetError(f"{where}: expected 'names' as a list or an id->name mapping, found {type(names).__name__}")
    if sorted(out) != list(range(len(out))):
        raise DatasetError(f"{where}: class ids in 'names' must be 0..{len(out) - 1} without gaps, found {sorted(out)[:10]}")
    return out


def _split_images(spec: Any, root: Path, where: str) -> List[Path]:
    """Image files of a split given as a folder, a .txt list, an image file, or a list of those."""
    entries = spec if isinstance(spec, (list, tuple)) else [spec]
    files: List[Path] = []
    for entry in entries:
        p = Path(str(entry))
        if not p.is_absolute():
            p = root / p
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        elif p.is_file() and p.suffix.lower() == ".txt":
            for line in p.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                f = Path(line)
                files.append(f if f.is_absolute() else (p.parent / f))
        elif p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            files.append(p)
        else:
            raise DatasetError(
                f"{where}: split entry {entry!r} resolves to {p}, which is not a folder of images, "
                f"a .txt list of image paths or an image file"
            )
    return [Path(os.path.normpath(f)) for f in files]


def label_path(image: Path) -> Path:
    """``.../images/a/b.jpg`` -> ``.../labels/a/b.txt`` (the last ``images`` folder is swapped)."""
    s = str(image)
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    if sa in s:
        s = sb.join(s.rsplit(sa, 1))
    return Path(s).with_suffix(".txt")


def image_ids(paths: Sequence[Path]) -> List[int]:
    """Image ids for result files: the file stem as an int when every stem is a distinct number
    (``000000000009.jpg`` -> 9, as COCO names its images), else the position in the split."""
    stems = [p.stem for p in paths]
    if stems and all(s.isdigit() for s in stems):
        ids = [int(s) for s in stems]
        if len(set(ids)) == len(ids):
            return ids
    return list(range(len(paths)))


def parse_label_file(path: Path, nc: int) -> Tuple[np.ndarray, List[List[np.ndarray]], List[LabelIssue]]:
    """Parse one YOLO segmentation label file.

    Returns ``(class_ids (G,) int64, segments, issues)``: ``segments[i]`` is a one-element list
    holding the (K, 2) float64 normalized polygon of instance i (a box line becomes its 4 corners).
    A missing file means an image without objects. Bad lines become issues and are skipped.
    """
    issues: List[LabelIssue] = []
    classes: List[int] = []
    segments: List[List[np.ndarray]] = []
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return np.zeros(0, np.int64), [], []
    except (OSError, UnicodeDecodeError) as exc:
        return np.zeros(0, np.int64), [], [LabelIssue(str(path), 0, f"cannot read label file: {exc}")]
    for lineno, line in enumerate(text.splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue

        def bad(reason: str) -> None:
            issues.append(LabelIssue(str(path), lineno, reason))

        try:
            cls_f = float(tokens[0])
        except ValueError:
            bad(f"class {tokens[0]!r} is not a number")
            continue
        if not math.isfinite(cls_f) or cls_f != int(cls_f):
            bad(f"class {tokens[0]!r} is not an integer")
            continue
        cls = int(cls_f)
        if not 0 <= cls < nc:
            bad(f"class {cls} is out of range (the dataset has classes 0-{nc - 1})")
            continue
        try:
            coords = np.array([float(t) for t in tokens[1:]], np.float64)
        except ValueError:
            bad("coordinates must be numbers, found " + " ".join(t for t in tokens[1:] if not _is_float(t))[:60])
            continue
        n = len(coords)
        if n % 2:
            bad(f"odd number of coordinates ({n}); expected x y pairs")
            continue
        if n != 4 and n < 6:
            bad(f"a polygon needs at least 3 points (6 coordinates), found {n} coordinates")
            continue
        if not np.isfinite(coords).all():
            bad("coordinates contain NaN or infinity")
            continue
        if coords.min() < -_EPS or coords.max() > 1 + _EPS:
            bad(f"coordinates must be normalized to 0-1, found values from {coords.min():g} to {coords.max():g}")
            continue
        coords = np.clip(coords, 0.0, 1.0)
        if n == 4:  # a box label: cx cy w h
            cx, cy, bw, bh = coords
            poly = np.array([[cx - bw / 2, cy - bh / 2], [cx - bw / 2, cy + bh / 2],
                             [cx + bw / 2, cy + bh / 2], [cx + bw / 2, cy - bh / 2]], np.float64)
        else:
            poly = coords.reshape(-1, 2)
        classes.append(cls)
        segments.append([poly])
    return np.array(classes, np.int64), segments, issues


def _is_float(t: str) -> bool:
    try:
        float(t)
        return True
    except ValueError:
        return False


def load_yolo(data: Union[str, Path], split: str = "val") -> Dataset:
    """Read the ``split`` of a YOLO segmentation dataset YAML (labels parsed, images not read)."""
    yaml_path = Path(data)
    cfg = read_dataset_yaml(yaml_path)
    names = _names(cfg, yaml_path)
    if cfg.get(split) in (None, ""):
        have = [k for k in ("train", "val", "test") if cfg.get(k)]
        raise DatasetError(f"{yaml_path}: no '{split}' split; the file defines {have or 'no splits'}")
    root: Path = cfg["path"]
    images = _split_images(cfg[split], root, f"{yaml_path} '{split}'")
    if not images:
        raise DatasetError(f"{yaml_path}: split '{split}' has no images (looked in {cfg[split]} under {root})")
    ids = image_ids(images)
    items: List[ImageLabels] = []
    issues: List[LabelIssue] = []
    found_labels = 0
    for img, image_id in zip(images, ids):
        lp = label_path(img)
        found_labels += lp.is_file()
        cls, segs, errs = parse_label_file(lp, len(names))
        issues += errs
        items.append(ImageLabels(path=img, image_id=image_id, class_ids=cls, segments=segs, normalized=True))
    if found_labels == 0:
        raise DatasetError(
            f"{yaml_path}: no label files found for split '{split}' (expected e.g. {label_path(images[0])})"
        )
    items.sort(key=lambda it: it.image_id)
    return Dataset(names=names, items=items, issues=issues, source=yaml_path, kind="yolo")

