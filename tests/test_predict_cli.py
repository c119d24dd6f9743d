"""``edgeseg predict`` as ``run`` over files: bad files among good ones keep the good results, image
URLs, ``--save out.jpg``, one ``[h, w]`` order in the JSON, each bad path said once."""
from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import threading
from pathlib import Path
from typing import Iterator, Tuple

import numpy as np
import pytest
from click.testing import CliRunner

from _assets import IMAGES, MODELS, require_assets
from _mjpeg import free_port

cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")

from edgeseg.cli import main  # noqa: E402

MODEL = MODELS / "yolov8n-seg-320-int8dyn.onnx"
BUS, ZIDANE = IMAGES / "bus.jpg", IMAGES / "zidane.jpg"


def predict(*args: str) -> "object":
    return CliRunner().invoke(main, ["predict", "-m", str(MODEL), *args])


def test_bad_files_among_good_ones_are_listed_and_the_good_results_written(tmp_path: Path) -> None:
    require_assets(MODEL, BUS, ZIDANE)
    src = tmp_path / "imgs"
    src.mkdir()
    shutil.copy(BUS, src / "a_bus.jpg")
    shutil.copy(ZIDANE, src / "z_zidane.jpg")
    bad = {
        "b_nan.tif": lambda p: cv2.imwrite(str(p), np.full((20, 30, 3), np.nan, np.float32)),
        "c_int32.tif": lambda p: cv2.imwrite(str(p), np.full((20, 30), 7, np.int32)),
        "d_corrupt.png": lambda p: p.write_bytes(cv2.imencode(".png", np.zeros((40, 40, 3), np.uint8))[1].tobytes()[:60]),
        "e_folder.jpg": lambda p: p.mkdir(),
        "f_fifo.jpg": lambda p: os.mkfifo(p),
        "g_thin.png": lambda p: cv2.imwrite(str(p), np.full((1, 5000, 3), 90, np.uint8)),
    }
    for name, make in bad.items():
        make(src / name)
    out = tmp_path / "r.json"
    res = predict("-s", str(src), "--json", str(out), "--save", str(tmp_path / "annotated"))
    assert res.exit_code == 1, res.output
    doc = json.loads(out.read_text())  # the good images' results are written
    assert [Path(r["path"]).name for r in doc["results"]] == ["a_bus.jpg", "z_zidane.jpg"]
    assert "bus" in [d["class_name"] for d in doc["results"][0]["detections"]]
    assert sorted(p.name for p in (tmp_path / "annotated").iterdir()) == ["a_bus.jpg", "z_zidane.jpg"]
    listed = res.output.split(f"{len(bad)} input(s) failed:", 1)
    assert len(listed) == 2, res.output
    for name in bad:  # every bad file listed, its path said once
        lines = [line for line in listed[1].splitlines() if name in line]
        assert len(lines) == 1 and lines[0].count(name) == 1, (name, res.output)
    assert "Traceback" not in res.output


def test_one_unreadable_image_error_names_its_path_once(tmp_path: Path) -> None:
    require_assets(MODEL)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"garbage")
    res = predict("-s", str(broken), "--json", str(tmp_path / "r.json"))
    assert res.exit_code == 1
    assert res.output.count(str(broken)) == 1, res.output
    assert not (tmp_path / "r.json").exists()  # no result, no file


def test_json_image_size_is_h_w_like_mask_rle(tmp_path: Path) -> None:
    require_assets(MODEL, BUS)
    res = predict("-s", str(BUS), "--json", "-", "-q")
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)["results"][0]
    assert rec["image_size"] == [1080, 810]  # bus.jpg is 810 wide, 1080 high
    assert {tuple(d["mask_rle"]["size"]) for d in rec["detections"]} == {(1080, 810)}


def test_save_to_an_image_file_for_a_single_image(tmp_path: Path) -> None:
    require_assets(MODEL, BUS)
    out = tmp_path / "out.jpg"
    res = predict("-s", str(BUS), "--save", str(out))
    assert res.exit_code == 0, res.output
    assert out.is_file()  # a file, not a folder named out.jpg
    img = cv2.imread(str(out))
    assert img.shape == cv2.imread(str(BUS)).shape and float(np.abs(img.astype(int) - cv2.imread(str(BUS))).mean()) > 2
    png = tmp_path / "out.png"
    assert predict("-s", str(BUS), "--save", str(png)).exit_code == 0 and cv2.imread(str(png)) is not None
    folder = tmp_path / "two"
    folder.mkdir()
    shutil.copy(BUS, folder / "a.jpg")
    shutil.copy(BUS, folder / "b.jpg")
    res = predict("-s", str(folder), "--save", str(tmp_path / "many.jpg"))
    assert res.exit_code == 1 and "single image" in res.output and not (tmp_path / "many.jpg").exists()


@pytest.fixture
def http_images(tmp_path: Path) -> Iterator[Tuple[str, Path]]:
    """A local HTTP server (127.0.0.1) serving a folder with bus.jpg and a broken image."""
    require_assets(BUS)
    root = tmp_path / "www"
    root.mkdir()
    shutil.copy(BUS, root / "bus.jpg")
    (root / "broken.jpg").write_bytes(b"<html>not an image</html>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[assignment]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def test_predict_an_http_image_url(tmp_path: Path, http_images) -> None:
    require_assets(MODEL)
    base, _ = http_images
    out = tmp_path / "url.jpg"
    res = predict("-s", f"{base}/bus.jpg", "--json", str(tmp_path / "r.json"), "--save", str(out))
    assert res.exit_code == 0, res.output
    rec = json.loads((tmp_path / "r.json").read_text())["results"][0]
    assert rec["path"] == f"{base}/bus.jpg" and rec["image_size"] == [1080, 810]
    assert "bus" in [d["class_name"] for d in rec["detections"]]
    assert out.is_file() and cv2.imread(str(out)).shape == (1080, 810, 3)


def test_image_url_errors_are_clear(http_images) -> None:
    require_assets(MODEL)
    base, _ = http_images
    cases = [
        (f"{base}/missing.jpg", "HTTP 404"),
        (f"{base}/broken.jpg", f"{base}/broken.jpg: not a decodable image"),
        (f"http://127.0.0.1:{free_port()}/x.jpg", "cannot fetch the image"),
    ]
    for url, message in cases:
        res = predict("-s", url)
        assert res.exit_code == 1 and message in res.output and "Traceback" not in res.output, (url, res.output)
        assert "edgeseg-url-" not in res.output  # the download's temp file is not what the user named


def test_folder_with_a_video_keeps_the_video_as_a_video(tmp_path: Path) -> None:
    require_assets(MODEL, BUS)
    src = tmp_path / "in"
    src.mkdir()
    img = cv2.resize(cv2.imread(str(BUS)), (160, 212))
    cv2.imwrite(str(src / "a.jpg"), img)
    w = cv2.VideoWriter(str(src / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 212))
    for i in range(4):
        w.write(np.roll(img, 5 * i, axis=1))
    w.release()
    res = predict("-s", str(src), "--save", str(tmp_path / "o"), "--json", str(tmp_path / "r.json"))
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.jpg", "clip.mp4"]
    assert int(cv2.VideoCapture(str(tmp_path / "o" / "clip.mp4")).get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    doc = json.loads((tmp_path / "r.json").read_text())
    assert [(Path(r["path"]).name, r.get("frame")) for r in doc["results"]] == \
        [("a.jpg", None), ("clip.avi", 0), ("clip.avi", 1), ("clip.avi", 2), ("clip.avi", 3)]
