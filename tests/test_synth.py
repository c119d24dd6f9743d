"""Synthetic data (`edgeseg data synth`): valid YOLO labels that equal the rendered pixels, determinism, the clip."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edgeseg.cli import main
from edgeseg.errors import DatasetError, InputError
from edgeseg.eval.datasets import load_dataset
from edgeseg.eval.datasets.polygon import crop_to_full
from edgeseg.eval.datasets.synth import CLASSES, resolve_classes, synth_dataset, synth_image


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "ds"
    result = CliRunner().invoke(main, ["data", "synth", "--out", str(out), "--images", "12", "--imgsz", "96",
                                       "--seed", "3", "--video", "2", "--fps", "8"])
    assert result.exit_code == 0, result.output
    assert "10 train + 2 val images" in result.output
    return out


@pytest.mark.parametrize("split", ["train", "val"])
def test_labels_pass_data_check(synth: Path, split: str) -> None:
    result = CliRunner().invoke(main, ["data", "check", str(synth / "synth.yaml"), "--split", split])
    assert result.exit_code == 0, result.output
    assert "0 label(s) skipped" in result.output
    assert f"{len(CLASSES)} classes" in result.output


def test_label_masks_equal_rendered_pixels(synth: Path) -> None:
    """Every label, read back from disk and rasterized the COCO way, is exactly the visible part
    of its shape; together they cover every shape pixel (nothing visible is unlabelled)."""
    ds = load_dataset(synth / "synth.yaml", split="train")
    checked = 0
    for item in ds:
        index = int(item.path.stem)
        img, objects, ids = synth_image(index, 96, seed=3, return_ids=True)
        assert cv2.imread(str(item.path)).shape == img.shape
        tg = item.targets(96, 96)
        assert len(tg) == len(objects) == ids.max()
        assert list(tg.class_ids) == [o["class_id"] for o in objects]
        for k in range(len(tg)):
            assert np.array_equal(crop_to_full(tg.masks[k], 96, 96), ids == k + 1), (item.path, k)
            checked += 1
    assert checked >= 10


def test_occlusion_happens_and_labels_are_visible_parts() -> None:
    """Across a few images some instance is partly hidden: its visible pixels are fewer than its
    full shape's, and the label follows the visible part (two labels never share a pixel)."""
    occluded = 0
    for i in range(15):
        _, objects, ids = synth_image(i, 128, seed=0, return_ids=True)
        assert sum(o["pixels"] for o in objects) == int((ids > 0).sum())
        for o in objects:
            x1, y1, x2, y2 = o["box"]
            full = (x2 - x1) * (y2 - y1)
            occluded += o["pixels"] < 0.5 * full
    assert occluded > 0


def test_same_seed_same_files_other_seed_other_files(tmp_path: Path) -> None:
    a = synth_dataset(tmp_path / "a", images=4, imgsz=64, seed=7)
    synth_dataset(tmp_path / "b", images=4, imgsz=64, seed=7)
    synth_dataset(tmp_path / "c", images=4, imgsz=64, seed=8)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    # image i depends on (seed, i) only: a longer run starts with the same images
    synth_dataset(tmp_path / "d", images=6, imgsz=64, seed=7, val_fraction=0.5)
    assert (tmp_path / "a/images/train/000000.jpg").read_bytes() == (tmp_path / "d/images/train/000000.jpg").read_bytes()
    assert a["yaml"] == str(tmp_path / "a" / "synth.yaml")


def test_video_ground_truth_tracks(synth: Path) -> None:
    cap = cv2.VideoCapture(str(synth / "video.mp4"))
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, frame = cap.read()
    cap.release()
    assert ok and frames == 16
    rows = [json.loads(line) for line in (synth / "video.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in rows] == list(range(16))
    assert frame.shape[:2] == (rows[0]["height"], rows[0]["width"]) == (96, 128)
    tracks = {}
    for r in rows:
        for o in r["objects"]:
            assert CLASSES[o["class_id"]] == o["class"]
            assert tracks.setdefault(o["track_id"], o["class_id"]) == o["class_id"]  # a track keeps its class
            x1, y1, x2, y2 = o["box"]
            poly = np.array(o["polygon"])
            assert 0 < o["visible"] <= 1 and len(poly) >= 3
            assert poly[:, 0].min() >= x1 - 1e-6 and poly[:, 0].max() <= x2 + 1e-6
    assert len(tracks) >= 4


def test_classes_option_and_bad_input(tmp_path: Path) -> None:
    assert resolve_classes(2) == CLASSES[:2]
    assert resolve_classes("star,circle") == ("star", "circle")
    with pytest.raises(InputError, match="classes must be names from circle"):
        resolve_classes("circle,blob")
    with pytest.raises(InputError, match="expected 1 to 6"):
        resolve_classes(9)
    report = synth_dataset(tmp_path / "s", images=3, imgsz=64, classes="star,circle")
    assert report["names"] == {0: "star", 1: "circle"}
    with pytest.raises(DatasetError, match="exists and is not empty"):
        synth_dataset(tmp_path / "s", images=3, imgsz=64)
    result = CliRunner().invoke(main, ["data", "synth", "--out", str(tmp_path / "s"), "--images", "3"])
    assert result.exit_code == 1 and "--overwrite" in result.output
