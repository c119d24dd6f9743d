"""``edgeseg run`` end to end: a generated video through --save/--json, and a live MJPEG stream
served by a separate process that is killed and restarted mid-run."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import numpy as np
import pytest

from _mjpeg import free_port, start_mjpeg_server

cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
MODEL = ASSETS / "models" / "yolov8n-seg-320-int8dyn.onnx"
BUS = ASSETS / "images" / "bus.jpg"
EDGESEG = [sys.executable, "-c", "from edgeseg.cli import main; main(prog_name='edgeseg')"]

pytestmark = pytest.mark.skipif(not (MODEL.is_file() and BUS.is_file()),
                                reason=f"test assets not found under {ASSETS}")


def make_video(path: Path, n: int = 30, width: int = 320, fps: float = 15.0) -> Path:
    """``n`` frames of bus.jpg, shifted 4 px per frame, as an mp4v video."""
    img = cv2.imread(str(BUS))
    img = cv2.resize(img, (width, int(img.shape[0] * width / img.shape[1])))
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (img.shape[1], img.shape[0]))
    assert w.isOpened()
    for i in range(n):
        w.write(np.roll(img, i * 4, axis=1))
    w.release()
    return path


def edgeseg(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(EDGESEG + list(args), capture_output=True, text=True, timeout=300, **kw)


def test_video_file_save_and_json(tmp_path: Path) -> None:
    video = make_video(tmp_path / "in.mp4", n=30)
    out_video, out_json = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    r = edgeseg("run", "--model", str(MODEL), "--source", str(video), "--save", str(out_video),
                "--json", str(out_json))
    assert r.returncode == 0, r.stderr
    lines = out_json.read_text().splitlines()
    assert len(lines) == 30
    recs = [json.loads(line) for line in lines]
    assert [r_["frame"] for r_ in recs] == list(range(30))  # every frame, in order
    for rec in recs:
        for key in ("read", "preprocess", "inference", "postprocess", "frame_age"):
            assert rec["speed_ms"][key] >= 0.0, (key, rec["speed_ms"])
        assert rec["speed_ms"]["inference"] > 0.0
        assert rec["image_size"] == [426, 320]  # [h, w]
        assert rec["path"] == str(video)
        names = [d["class_name"] for d in rec["detections"]]
        assert "bus" in names and names.count("person") >= 2, names  # the real model sees the real photo
        assert all(d["polygons"] for d in rec["detections"])
    # frames decoded in order: monotonic capture times never go back
    times = [rec["monotonic"] for rec in recs]
    assert times == sorted(times)
    cap = cv2.VideoCapture(str(out_video))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    assert len(frames) == 30
    assert frames[0].shape == (426, 320, 3)
    # annotated: the saved frame differs from the source frame where boxes/masks were drawn
    src = cv2.VideoCapture(str(video)).read()[1]
    assert float(np.abs(frames[0].astype(int) - src.astype(int)).mean()) > 3.0
    assert "30 frames" in r.stderr and "FPS" in r.stderr
    assert not list(tmp_path.glob(".*"))  # no temp files left behind


def test_save_folder_of_frames_from_images(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    img = cv2.resize(cv2.imread(str(BUS)), (240, 320))
    for name in ("a.jpg", "b.png"):
        cv2.imwrite(str(folder / name), img)
    (folder / "notes.txt").write_text("not an image")
    r = edgeseg("run", "-m", str(MODEL), "-s", str(folder), "--save", str(tmp_path / "out"), "-q")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.jpg", "b.jpg"]


@pytest.mark.parametrize("args, message", [
    (["--camera", "0"], "camera"),
    (["-s", "missing.mp4"], "no such file"),
    (["-s", "ftp://example.com/x"], "unsupported URL scheme"),
    (["-s", "videotestsrc ! appsink"], "GStreamer"),
    ([], "no input"),
    (["-s", "X.mp4", "--camera", "0"], "either --camera or --source"),
    (["-s", "IN", "--show"], "--serve"),
    (["-s", "IN", "--save", "out.jpg"], "expected a video file"),
    (["-s", "IN", "--mqtt", "mqtt://localhost"], "no topic"),
    (["-s", "IN", "--token", "x"], "--token is for --serve"),
    (["-s", "IN", "--board", "no-such-board"], "unknown board"),
])
def test_clear_errors(tmp_path: Path, args: List[str], message: str) -> None:
    video = make_video(tmp_path / "in.mp4", n=2)
    args = [str(video) if a == "IN" else a for a in args]
    if "videotestsrc ! appsink" in args and "GStreamer:                   YES" in cv2.getBuildInformation():
        pytest.skip("this OpenCV has GStreamer")
    r = edgeseg("run", "-m", str(MODEL), *args, cwd=tmp_path)
    assert r.returncode != 0
    assert message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_board_profile_applies(tmp_path: Path) -> None:
    video = make_video(tmp_path / "in.mp4", n=3)
    r = edgeseg("run", "-m", str(MODEL), "-s", str(video), "--board", "generic-x86", "--json", "-", "-v")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 3
    assert "board generic-x86: backend onnxruntime" in r.stderr
    # the profile's 640 px input size does not apply to a model with a fixed 320 px input
    assert json.loads(r.stdout.splitlines()[0])["detections"]


def test_help_has_example() -> None:
    r = edgeseg("run", "--help")
    assert r.returncode == 0
    assert "Example:" in r.stdout and "--camera 0" in r.stdout and "--serve" in r.stdout


# -- live: an MJPEG server in another process, killed and restarted mid-run --------------------------







def test_live_mjpeg_stream_reconnects_and_stays_live(tmp_path: Path) -> None:
    port = free_port()
    server = start_mjpeg_server(port, BUS, fps=100.0)
    err_path = tmp_path / "stderr.txt"
    n = 36
    with open(err_path, "w") as err:
        proc = subprocess.Popen(EDGESEG + ["run", "-m", str(MODEL), "-s", f"http://127.0.0.1:{port}/stream.mjpg",
                                           "--json", "-", "--masks", "none", "--max-frames", str(n), "-q"],
                                stdout=subprocess.PIPE, stderr=err, text=True)
    recs: List[dict] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 240
        killed_at = None
        while len(recs) < n and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            recs.append(json.loads(line))
            if len(recs) == 12:  # kill the server mid-run, keep it down 2 s, start it again
                server.kill()
                server.wait()
                killed_at = time.time()
                time.sleep(2.0)
                server = start_mjpeg_server(port, BUS, fps=100.0)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        server.kill()
        server.wait()
    stderr = err_path.read_text()
    assert proc.returncode == 0, stderr
    assert len(recs) == n, stderr
    assert "reconnecting" in stderr and "reconnected" in stderr, stderr
    assert killed_at is not None
    after = [r for r in recs if r["time"] > killed_at + 1.0]
    assert len(after) >= 10, "the run did not continue after the server came back"
    # frame indices grow (the source skips frames instead of queueing them: gaps are expected)
    idx = [r["frame"] for r in recs]
    assert idx == sorted(idx) and len(set(idx)) == n
    assert idx[-1] - idx[0] > n, "no frame was skipped although the source is faster than inference"
    # bounded frame age: a result is never older than a few inference periods, even at the end
    for r in recs:
        ms = r["speed_ms"]
        bound = 3.0 * (ms["preprocess"] + ms["inference"] + ms["postprocess"]) + 1000.0
        assert ms["frame_age"] < bound, (r["frame"], ms)
    ages = [r["speed_ms"]["frame_age"] for r in after]
    infer = float(np.median([r["speed_ms"]["inference"] for r in recs]))
    assert float(np.median(ages[-8:])) < 4.0 * infer + 500.0, (ages, infer)


def test_sigterm_stops_cleanly_and_finalizes_outputs(tmp_path: Path) -> None:
    port = free_port()
    server = start_mjpeg_server(port, BUS, fps=100.0)
    out_video, out_json = tmp_path / "live.mp4", tmp_path / "live.jsonl"
    try:
        proc = subprocess.Popen(EDGESEG + ["run", "-m", str(MODEL), "-s", f"http://127.0.0.1:{port}/s.mjpg",
                                           "--save", str(out_video), "--json", str(out_json), "-q"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # wait until frames flow (the JSON temp file grows), then ask it to stop
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            tmp = [p for p in tmp_path.glob(".live.jsonl.*")]
            if tmp and tmp[0].stat().st_size > 0 and len(tmp[0].read_text().splitlines()) >= 20:
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        server.kill()
        server.wait()
    assert proc.returncode == 0, err
    assert "SIGTERM" in err
    lines = out_json.read_text().splitlines()
    assert len(lines) >= 20
    cap = cv2.VideoCapture(str(out_video))
    count = 0
    while cap.read()[0]:
        count += 1
    assert count == len(lines)  # every frame that got a JSON line is in the finalized video
    assert not list(tmp_path.glob(".live.*"))


def test_board_input_size_applies_only_to_models_without_a_fixed_size() -> None:
    from edgeseg import Runtime
    from edgeseg.cli.run import _make_runtime

    rt = _make_runtime(Runtime, {"model": MODEL}, {}, board_imgsz=640)  # fixed 320x320: the board's size is ignored
    assert rt.imgsz == (320, 320) and rt.fixed_imgsz == (320, 320)
    rt.close()
    pt = ASSETS / "models" / "yolov8n-seg-coco.pt"
    pytest.importorskip("torch", reason="the .pt needs the convert extra")
    rt = _make_runtime(Runtime, {"model": pt}, {}, board_imgsz=320)
    assert rt.fixed_imgsz is None and rt.imgsz == (320, 320)
    assert 5 in rt(BUS).class_ids  # the bus, at the board's size
    rt.close()
