"""The YOLO segmentation dataset reader: YAML, splits, label files and their bad lines."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from _assets import ASSETS, require_assets
from edgeseg.eval.datasets import load_dataset, parse_label_file
from edgeseg.eval.datasets.yolo import image_ids, label_path
from edgeseg.errors import DatasetError

COCO8 = ASSETS / "datasets" / "coco8-seg.yaml"
COCO128 = ASSETS / "datasets" / "coco128-seg.yaml"


@pytest.mark.parametrize("line,reason", [
    ("0 0.1 0.1 0.2 0.2 0.3", "odd number of coordinates (5)"),
    ("999 0.1 0.1 0.2 0.1 0.2 0.2", "class 999 is out of range (the dataset has classes 0-79)"),
    ("-1 0.1 0.1 0.2 0.1 0.2 0.2", "class -1 is out of range"),
    ("0 0.1 nan 0.2 0.1 0.2 0.2", "NaN or infinity"),
    ("0 0.1 inf 0.2 0.1 0.2 0.2", "NaN or infinity"),
    ("0 0.1 0.1 1.5 0.1 0.2 0.2", "normalized to 0-1, found values from 0.1 to 1.5"),
    ("0 -0.2 0.1 0.5 0.1 0.2 0.2", "normalized to 0-1"),
    ("0 0.1 0.1 0.2 0.2", None),  # four numbers: a box label, valid
    ("0 0.1 0.1", "at least 3 points"),
    ("0", "at least 3 points (6 coordinates), found 0"),
    ("person 0.1 0.1 0.2 0.1 0.2 0.2", "class 'person' is not a number"),
    ("1.5 0.1 0.1 0.2 0.1 0.2 0.2", "class '1.5' is not an integer"),
    ("0 0.1 0.1 0.2 x 0.2 0.2", "coordinates must be numbers, found x"),
    ("3.0 0.1 0.1 0.2 0.1 0.2 0.2", None),
])
def test_bad_lines_are_reported_with_file_and_line(tmp_path: Path, line: str, reason) -> None:
    f = tmp_path / "a.txt"
    good = "0 0.1 0.1 0.9 0.1 0.5 0.8"
    f.write_text(f"{good}\n\n{line}\n{good}\n")
    cls, segs, issues = parse_label_file(f, 80)
    if reason is None:
        assert not issues and len(cls) == 3
        return
    assert len(cls) == 2 and len(segs) == 2, "bad line skipped, the good ones kept"
    assert len(issues) == 1
    assert issues[0].line == 3 and issues[0].path == str(f)
    assert str(issues[0]).startswith(f"{f}:3: ")
    assert reason in issues[0].reason, issues[0].reason


def test_box_label_becomes_its_corner_polygon(tmp_path: Path) -> None:
    f = tmp_path / "b.txt"
    f.write_text("2 0.5 0.5 0.2 0.4\n")
    cls, segs, _ = parse_label_file(f, 3)
    np.testing.assert_allclose(segs[0][0], [[0.4, 0.3], [0.4, 0.7], [0.6, 0.7], [0.6, 0.3]])


def test_missing_label_file_is_an_image_without_objects(tmp_path: Path) -> None:
    cls, segs, issues = parse_label_file(tmp_path / "none.txt", 80)
    assert len(cls) == 0 and segs == [] and issues == []


def test_label_path_and_image_ids() -> None:
    assert label_path(Path("/d/images/train/x.jpg")) == Path("/d/labels/train/x.txt")
    assert label_path(Path("/images/d/images/a/b.png")) == Path("/images/d/labels/a/b.txt")
    assert image_ids([Path("000000000009.jpg"), Path("25.jpg")]) == [9, 25]
    assert image_ids([Path("a.jpg"), Path("9.jpg")]) == [0, 1]
    assert image_ids([Path("09.jpg"), Path("9.jpg")]) == [0, 1]  # not distinct as numbers


def test_coco128_reads_whole() -> None:
    require_assets(COCO128)
    ds = load_dataset(COCO128, split="val")
    assert len(ds) == 128 and ds.num_instances == 929 and not ds.issues
    assert ds.names[0] == "person" and len(ds.names) == 80
    assert [it.image_id for it in ds] == sorted(it.image_id for it in ds)
    it = ds[0]
    t = it.targets(480, 640)
    assert t.boxes.shape == (len(it), 4) and len(t.masks) == len(it)
    assert (t.areas > 0).all() and not t.iscrowd.any()


@pytest.mark.parametrize("spec", ["folder", "txt", "list", "single"])
def test_split_forms(tmp_path: Path, spec: str) -> None:
    require_assets(COCO8)
    shutil.copytree(COCO8.parent / "coco8-seg", tmp_path / "ds")
    imgs = sorted((tmp_path / "ds" / "images" / "val").glob("*.jpg"))
    if spec == "folder":
        val = "images/val"
    elif spec == "txt":
        (tmp_path / "ds" / "val.txt").write_text("".join(f"./images/val/{p.name}\n" for p in imgs[:3]))
        val = "val.txt"
    elif spec == "list":
        val = ["images/val", "images/train"]
    else:
        val = f"images/val/{imgs[0].name}"
    import yaml

    cfg = {"path": "ds", "val": val, "names": ["person", "bicycle"] + [f"c{i}" for i in range(2, 80)]}
    y = tmp_path / "d.yaml"
    y.write_text(yaml.safe_dump(cfg))
    ds = load_dataset(y)
    assert len(ds) == {"folder": 4, "txt": 3, "list": 8, "single": 1}[spec]
    assert all(it.path.is_file() for it in ds)


@pytest.mark.parametrize("content,message", [
    ("path: .\nval: images\nnames: [a]\n", "which is not a folder of images"),
    ("path: .\ntrain: x\nnames: [a]\n", "no 'val' split; the file defines ['train']"),
    ("- a\n- b\n", "expected a mapping"),
    ("path: .\nval: .\nnames: 3\n", "expected 'names' as a list"),
    ("path: .\nval: .\nnames: {0: a, 2: b}\n", "without gaps"),
    ("val: [\n", "not valid YAML"),
])
def test_yaml_errors(tmp_path: Path, content: str, message: str) -> None:
    y = tmp_path / "d.yaml"
    y.write_text(content)
    with pytest.raises(DatasetError, match=None) as exc:
        load_dataset(y)
    assert message in str(exc.value)


def test_dataset_without_any_label_files_is_an_error(tmp_path: Path) -> None:
    require_assets(COCO8)
    shutil.copytree(COCO8.parent / "coco8-seg" / "images", tmp_path / "images")
    y = tmp_path / "d.yaml"
    y.write_text("val: images/val\nnames: [a]\n")
    with pytest.raises(DatasetError, match="no label files found"):
        load_dataset(y)
