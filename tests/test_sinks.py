"""Sinks on their own: videos and frames written atomically, JSON lines, the preview server's routes."""
from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, List

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from edgeseg.errors import BackendUnavailableError, InputError  # noqa: E402
from edgeseg.results import Results  # noqa: E402
from edgeseg.live.server import PreviewServer, parse_bind  # noqa: E402
from edgeseg.live.sinks import FramesSink, JsonSink, Packet, ShowSink, VideoSink, save_sink  # noqa: E402
from edgeseg.live.sources import Frame, opencv_has  # noqa: E402


def packet(index: int, size=(120, 160), t: float = None, path: str = "cam", live: bool = False, fps=None) -> Packet:
    h, w = size
    img = np.full((h, w, 3), 30, np.uint8)
    res = Results(boxes=np.array([[10, 10, 60, 50]], np.float32), scores=np.array([0.8], np.float32),
                  class_ids=np.array([0]), names={0: "person"}, orig_shape=(h, w),
                  speed={"preprocess": 1.0, "inference": 5.0, "postprocess": 2.0, "frame_age": 9.0})
    frame = Frame(img, index, time.monotonic() if t is None else t, path)
    return Packet(frame, res, fps=fps, live=live)


def read_video(path: Path) -> List[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, f = cap.read()
        if not ok:
            return out
        out.append(f)


def test_video_sink_writes_atomically(tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"
    sink = VideoSink(target)
    for i in range(6):
        sink.write(packet(i, fps=12.0))
        assert not target.exists()  # nothing at the final name until close
    sink.write(packet(6, size=(240, 320), fps=12.0))  # another size: resized to the first
    sink.close()
    frames = read_video(target)
    assert len(frames) == 7 and frames[0].shape == (120, 160, 3)
    assert cv2.VideoCapture(str(target)).get(cv2.CAP_PROP_FPS) == pytest.approx(12.0)
    # the box was drawn: the annotated frame is not the flat gray source
    assert frames[0].std() > 5
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_video_sink_estimates_fps_of_live_sources(tmp_path: Path) -> None:
    target = tmp_path / "live.avi"
    sink = VideoSink(target)
    t0 = time.monotonic()
    for i in range(20):  # results arrive at 5 per second from a live source
        sink.write(packet(i * 6, t=t0 + i * 0.2, live=True, fps=30.0))
    sink.close()
    assert len(read_video(target)) == 20
    assert cv2.VideoCapture(str(target)).get(cv2.CAP_PROP_FPS) == pytest.approx(5.0, abs=0.1)


def test_frames_sink_names(tmp_path: Path) -> None:
    sink = FramesSink(tmp_path / "out")
    sink.write(packet(0, path=str(tmp_path / "a.jpg")))
    sink.write(packet(1, path=str(tmp_path / "sub" / "a.jpg")))
    sink.write(packet(7, path="rtsp://cam/stream"))
    sink.close()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.jpg", "a_1.jpg", "frame_000007.jpg"]
    assert cv2.imread(str(tmp_path / "out" / "a.jpg")).shape == (120, 160, 3)


@pytest.mark.parametrize("target, kind", [("x.mp4", VideoSink), ("x.avi", VideoSink), ("x.mkv", VideoSink),
                                          ("frames", FramesSink)])
def test_save_sink_dispatch(tmp_path: Path, target: str, kind: type) -> None:
    assert isinstance(save_sink(tmp_path / target), kind)


@pytest.mark.parametrize("target", ["x.jpg", "x.png", "x.webm"])
def test_save_sink_rejects(tmp_path: Path, target: str) -> None:
    with pytest.raises(InputError, match="expected a video file"):
        save_sink(tmp_path / target)


def test_json_sink_file_and_stdout(tmp_path: Path, capsys) -> None:
    target = tmp_path / "r.jsonl"
    sink = JsonSink(target)
    sink.write(packet(0))
    sink.write(packet(1))
    assert not target.exists()
    sink.close()
    recs = [json.loads(x) for x in target.read_text().splitlines()]
    assert [r["frame"] for r in recs] == [0, 1]
    assert recs[0]["speed_ms"] == {"preprocess": 1.0, "inference": 5.0, "postprocess": 2.0, "frame_age": 9.0}
    assert recs[0]["detections"][0]["class_name"] == "person" and abs(recs[0]["time"] - time.time()) < 5
    out = JsonSink("-", masks=None)
    out.write(packet(3))
    out.close()
    assert json.loads(capsys.readouterr().out)["frame"] == 3
    with pytest.raises(InputError, match="is a folder"):
        JsonSink(tmp_path)


def test_show_needs_gui() -> None:
    if opencv_has("GUI"):
        pytest.skip("this OpenCV has GUI support")
    with pytest.raises(BackendUnavailableError, match="--serve"):
        ShowSink()


@pytest.mark.parametrize("value, expected", [
    ("8080", ("127.0.0.1", 8080)), ("0.0.0.0:9000", ("0.0.0.0", 9000)), (":81", ("127.0.0.1", 81)),
    ("[::1]:8080", ("::1", 8080)), ("0", ("127.0.0.1", 0)),
])
def test_parse_bind(value: str, expected) -> None:
    assert parse_bind(value) == expected


@pytest.mark.parametrize("value", ["http", "1.2.3.4:x", "70000", "[::1]8080"])
def test_parse_bind_rejects(value: str) -> None:
    with pytest.raises(InputError):
        parse_bind(value)


def _get(url: str, timeout: float = 5.0) -> Any:
    return urllib.request.urlopen(url, timeout=timeout)


def test_preview_server_routes() -> None:
    server = PreviewServer("127.0.0.1", 0, source_name="test").start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert server.url == base + "/"
        with pytest.raises(urllib.error.HTTPError) as exc:
            _get(base + "/frame.jpg")
        assert exc.value.code == 503
        assert json.load(_get(base + "/stats.json")) == {}
        page = _get(base + "/").read().decode()
        assert "stream.mjpg" in page and "stats.json" in page
        jpeg0 = cv2.imencode(".jpg", np.zeros((48, 64, 3), np.uint8))[1].tobytes()
        server.publish(jpeg0, {"fps": 3.0})
        assert _get(base + "/frame.jpg").read() == jpeg0
        stats = json.load(_get(base + "/stats.json"))
        assert stats["fps"] == 3.0 and stats["seq"] == 1 and stats["source"] == "test"
        # MJPEG: read two parts from the multipart stream
        resp = _get(base + "/stream.mjpg")
        assert resp.headers["Content-Type"].startswith("multipart/x-mixed-replace; boundary=")
        jpeg1 = cv2.imencode(".jpg", np.full((48, 64, 3), 200, np.uint8))[1].tobytes()
        parts = []
        for _ in range(2):
            line = resp.readline()
            while not line.startswith(b"--"):
                line = resp.readline()
            headers = {}
            while True:
                h = resp.readline().strip()
                if not h:
                    break
                k, v = h.decode().split(":", 1)
                headers[k.lower()] = v.strip()
            parts.append(resp.read(int(headers["content-length"])))
            if len(parts) == 1:
                server.publish(jpeg1, {"fps": 4.0})
        assert parts == [jpeg0, jpeg1]
        resp.close()
        with pytest.raises(urllib.error.HTTPError) as exc:
            _get(base + "/nope")
        assert exc.value.code == 404
    finally:
        t0 = time.monotonic()
        server.close()
        assert time.monotonic() - t0 < 5  # open MJPEG clients do not block shutdown


def test_preview_server_port_in_use() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(InputError, match="cannot listen"):
            PreviewServer("127.0.0.1", s.getsockname()[1]).start()
