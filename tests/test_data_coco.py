"""COCO instances JSON: reading (polygons, RLE, crowd, bad annotations), export and conversion."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from _assets import ASSETS, require_assets
from edgeseg.eval.datasets import convert_coco, load_dataset, merge_polygons, to_coco
from edgeseg.eval.datasets.polygon import crop_to_full, polygon_mask, polygons_mask
from edgeseg.errors import DatasetError

COCO8 = ASSETS / "datasets" / "coco8-seg.yaml"
mask_util = pytest.importorskip("pycocotools.mask", reason="pycocotools (a dev dependency) is the reference")
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _write_images(folder: Path, sizes) -> None:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for name, (h, w) in sizes.items():
        cv2.imwrite(str(folder / name), np.full((h, w, 3), 90, np.uint8))


def _crowd_rle(h: int, w: int) -> dict:
    m = np.zeros((h, w), np.uint8)
    m[5:20, 10:30] = 1
    r = mask_util.encode(np.asfortranarray(m))
    return {"size": [h, w], "counts": r["counts"].decode()}


@pytest.fixture()
def coco_file(tmp_path: Path) -> Path:
    _write_images(tmp_path / "images", {"a.jpg": (40, 60), "b.jpg": (30, 50)})
    crowd_counts = mask_util.encode(np.asfortranarray(np.pad(np.ones((4, 4), np.uint8), ((2, 24), (3, 43)))))
    data = {
        "images": [{"id": 7, "file_name": "b.jpg", "height": 30, "width": 50},
                   {"id": 3, "file_name": "a.jpg", "height": 40, "width": 60}],
        "categories": [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}],
        "annotations": [
            {"id": 1, "image_id": 3, "category_id": 1, "segmentation": [[5, 5, 25, 5, 25, 30, 5, 30]],
             "bbox": [5, 5, 20, 25], "area": 500.0, "iscrowd": 0},
            {"id": 2, "image_id": 3, "category_id": 90, "segmentation": [[30, 5, 40, 5, 35, 15], [45, 20, 55, 20, 50, 35]],
             "bbox": [30, 5, 25, 30], "area": 123.0, "iscrowd": 0},
            {"id": 3, "image_id": 3, "category_id": 1, "segmentation": _crowd_rle(40, 60), "bbox": [10, 5, 20, 15],
             "area": 300.0, "iscrowd": 1},
            {"id": 4, "image_id": 7, "category_id": 1,
             "segmentation": {"size": [30, 50], "counts": crowd_counts["counts"].decode()}, "area": 16.0, "iscrowd": 0},
            {"id": 5, "image_id": 7, "category_id": 5, "segmentation": [[1, 1, 2, 2, 3, 1]], "bbox": [1, 1, 2, 1]},
            {"id": 6, "image_id": 7, "category_id": 1, "segmentation": [[1, 1, 2, 2, 3]], "bbox": [1, 1, 2, 1]},
            {"id": 7, "image_id": 7, "category_id": 1, "segmentation": [[1, 1, 2, float("nan"), 3, 1]]},
            {"id": 8, "image_id": 99, "category_id": 1, "segmentation": [[1, 1, 2, 2, 3, 1]]},
        ],
    }
    f = tmp_path / "instances_val.json"
    f.write_text(json.dumps(data))
    return f


def test_load_coco(coco_file: Path) -> None:
    ds = load_dataset(coco_file)
    assert ds.kind == "coco" and ds.names == {0: "person", 1: "toothbrush"} and ds.category_ids == [1, 90]
    assert [it.image_id for it in ds] == [3, 7], "sorted by id, as COCOeval orders images"
    assert ds[0].path == coco_file.parent / "images" / "a.jpg", "images found in images/ beside the JSON"
    reasons = [str(i) for i in ds.issues]
    assert len(reasons) == 4, reasons
    assert any("annotation 5" in r and "category_id 5" in r for r in reasons)
    assert any("annotation 6" in r and "odd number" in r for r in reasons)
    assert any("annotation 7" in r and "NaN" in r for r in reasons)
    assert any("image_id 99" in r for r in reasons)
    a = ds[0].targets(40, 60)
    assert list(a.class_ids) == [0, 1, 0] and list(a.iscrowd) == [False, False, True]
    np.testing.assert_array_equal(a.areas, [500.0, 123.0, 300.0])  # COCO's area field wins
    np.testing.assert_array_equal(a.boxes[1], [30, 5, 25, 30])
    union = polygons_mask([np.array([[30, 5], [40, 5], [35, 15.0]]), np.array([[45, 20], [55, 20], [50, 35.0]])], 40, 60)
    np.testing.assert_array_equal(crop_to_full(a.masks[1], 40, 60), crop_to_full(union, 40, 60))
    np.testing.assert_array_equal(crop_to_full(a.masks[2], 40, 60), mask_util.decode(_crowd_rle(40, 60)).astype(bool))
    b = ds[1].targets(30, 50)
    assert len(b) == 1 and b.areas[0] == 16.0 and b.masks[0][0].shape == (4, 4) and b.masks[0][1:] == (3, 2)
    np.testing.assert_array_equal(b.boxes[0], [3, 2, 4, 4])  # an RLE without bbox gets its mask box


def test_rle_of_the_wrong_size_is_an_error(coco_file: Path) -> None:
    ds = load_dataset(coco_file)
    with pytest.raises(DatasetError, match=r"RLE size \[30, 50\] does not match the image size \[31, 50\]"):
        ds[1].targets(31, 50)


def test_images_folder_errors(coco_file: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="images folder not found"):
        load_dataset(coco_file, images=tmp_path / "nope")
    other = tmp_path / "elsewhere" / "x.json"
    other.parent.mkdir()
    other.write_text(coco_file.read_text())
    with pytest.raises(DatasetError, match="pass the folder with --images"):
        load_dataset(other)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(DatasetError, match="expected a COCO instances file"):
        load_dataset(bad)


def test_convert_coco_writes_yolo(coco_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "yolo"
    report = convert_coco(coco_file, None, out)
    assert report["images"] == 2 and report["crowd_skipped"] == 1 and report["instances"] == 3
    ds = load_dataset(out / "val.yaml")
    assert ds.names == {0: "person", 1: "toothbrush"} and not ds.issues
    a = [it for it in ds if it.path.name == "a.jpg"][0]
    np.testing.assert_allclose(a.segments[0][0] * (60, 40), [[5, 5], [25, 5], [25, 30], [5, 30]], atol=1e-5)
    # the two-part object became one outline whose COCO rasterization is the union of the parts
    t = a.targets(40, 60)
    parts = [np.array([[30, 5], [40, 5], [35, 15.0]]), np.array([[45, 20], [55, 20], [50, 35.0]])]
    joined = crop_to_full(t.masks[1], 40, 60)
    union = crop_to_full(polygons_mask(parts, 40, 60), 40, 60)
    assert (joined & union).sum() / (joined | union).sum() > 0.95
    # the RLE object was traced into a polygon covering the same pixels
    b = [it for it in ds if it.path.name == "b.jpg"][0]
    assert len(b) == 1
    with pytest.raises(DatasetError, match="not empty"):
        convert_coco(coco_file, None, out)


def test_merge_polygons_traces_each_part_once() -> None:
    parts = [np.array([[0, 0], [10, 0], [10, 10], [0, 10.0]]), np.array([[20, 0], [30, 0], [30, 10.0]]),
             np.array([[0, 20], [10, 20], [5, 28.0]])]
    merged = merge_polygons(parts)
    for p in parts:  # every vertex is on the outline
        assert all(((merged - v) ** 2).sum(1).min() == 0 for v in p)
    full = crop_to_full(polygon_mask(merged, 32, 32), 32, 32)
    ref = crop_to_full(polygons_mask(parts, 32, 32), 32, 32)
    assert (full ^ ref).sum() <= 0.02 * ref.sum()
    assert merge_polygons(parts[:1]) is not None and len(merge_polygons(parts[:1])) == 4


def test_to_coco_matches_an_independent_build() -> None:
    """The exported ground truth equals one made straight from the label text with pycocotools."""
    import cv2

    require_assets(COCO8)
    gt = to_coco(load_dataset(COCO8))
    folder = COCO8.parent / "coco8-seg"
    anns = []
    for img in sorted((folder / "images" / "val").glob("*.jpg")):
        h, w = cv2.imread(str(img)).shape[:2]
        for line in (folder / "labels" / "val" / (img.stem + ".txt")).read_text().splitlines():
            tok = line.split()
            xy = np.array([float(v) for v in tok[1:]]).reshape(-1, 2) * (w, h)
            seg = [xy.ravel().tolist()]
            area = float(mask_util.area(mask_util.merge(mask_util.frPyObjects(seg, h, w))))
            (x0, y0), (x1, y1) = xy.min(0), xy.max(0)
            anns.append({"id": len(anns) + 1, "image_id": int(img.stem), "category_id": int(tok[0]), "segmentation": seg,
                         "area": area, "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0})
    assert json.dumps(gt["annotations"]) == json.dumps(anns)
    assert [im["id"] for im in gt["images"]] == [36, 42, 49, 61]
