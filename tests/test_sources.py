"""Sources: what a spec opens as, files in order, live newest-frame reading, reconnects, clear errors."""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from _mjpeg import wait_for  # noqa: E402
from edgeseg.errors import BackendUnavailableError, InputError, SourceError  # noqa: E402
from edgeseg.live.sources import FileSource, LiveSource, classify, list_cameras, open_source, opencv_has  # noqa: E402

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
BUS = ASSETS / "images" / "bus.jpg"


def make_video(path: Path, n: int, size: Tuple[int, int] = (160, 120), fps: float = 10.0) -> Path:
    """Frame i is a gray level 8*i, so the order of decoded frames can be checked."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert w.isOpened()
    for i in range(n):
        w.write(np.full((size[1], size[0], 3), 8 * i, np.uint8))
    w.release()
    return path


@pytest.mark.parametrize("spec, kind", [
    (0, "camera"), ("0", "camera"), ("/dev/video2", "camera"),
    ("picamera", "picamera"), ("picamera2:1", "picamera"), ("libcamera", "picamera"),
    ("nvarguscamerasrc ! video/x-raw(memory:NVMM) ! nvvidconv ! appsink", "gstreamer"),
    ("videotestsrc", "gstreamer"),
    ("rtsp://user:pw@cam.local:554/stream1", "stream"), ("http://127.0.0.1:8080/video.mjpg", "stream"),
    ("https://example.com/live.m3u8", "stream"), ("udp://0.0.0.0:5000", "stream"),
    ("ftp://example.com/v.mp4", "unknown-scheme"),
    ("clip.mp4", "video"), ("photo.JPG", "image"), ("frames/*.png", "glob"),
])
def test_classify(spec, kind: str) -> None:
    assert classify(spec) == kind


def test_video_file_every_frame_in_order(tmp_path: Path) -> None:
    src = open_source(make_video(tmp_path / "v.avi", 12))
    assert isinstance(src, FileSource) and not src.live
    assert src.total == 12 and src.fps == pytest.approx(10.0)
    frames = list(src)
    assert [f.index for f in frames] == list(range(12))
    levels = [int(np.median(f.image)) for f in frames]
    assert all(abs(lv - 8 * i) <= 3 for i, lv in enumerate(levels)), levels
    assert all(f.image.shape == (120, 160, 3) and f.image.dtype == np.uint8 for f in frames)
    stamps = [f.timestamp for f in frames]
    assert stamps == sorted(stamps) and stamps[-1] <= time.monotonic()
    assert src.stats["delivered"] == 12


def test_folder_and_glob_sorted_and_bad_files_skipped(tmp_path: Path, caplog) -> None:
    for i, name in enumerate(["b.png", "a.jpg", "c.bmp"]):
        cv2.imwrite(str(tmp_path / name), np.full((20, 30, 3), 40 * i, np.uint8))
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "readme.txt").write_text("ignored")
    make_video(tmp_path / "z.avi", 3)
    with caplog.at_level(logging.WARNING, logger="edgeseg.live.sources"):
        src = open_source(tmp_path)
        frames = list(src)
    assert [Path(f.path).name for f in frames] == ["a.jpg", "b.png", "c.bmp", "z.avi", "z.avi", "z.avi"]
    assert [f.index for f in frames] == list(range(6))
    assert src.stats["skipped"] == 1 and "broken.jpg" in caplog.text
    globbed = [Path(f.path).name for f in open_source(str(tmp_path / "*.png"))]
    assert globbed == ["b.png"]


@pytest.mark.parametrize("spec, message", [
    ("missing.mp4", "no such file"),
    ("nothing/*.jpg", "matches no files"),
    ("ftp://example.com/a.mp4", "unsupported URL scheme"),
    ("http://127.0.0.1:9/nothing.mjpg", "cannot open the stream"),
])
def test_source_errors(tmp_path: Path, spec: str, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        open_source(spec, timeout=3.0)


def test_empty_folder_and_not_a_video(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="holds no images or videos"):
        open_source(tmp_path / "empty")
    (tmp_path / "x.mp4").write_bytes(b"\0" * 100)
    with pytest.raises(SourceError, match="cannot open this as a video"):
        open_source(tmp_path / "x.mp4")
    with pytest.raises(InputError):
        open_source(tmp_path / "x.mp4", live=True)


def test_camera_error_lists_devices(tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    for name in ("video10", "video2", "video0", "vcs"):
        (tmp_path / "dev" / name).write_text("")
    assert list_cameras(tmp_path) == ["/dev/video0", "/dev/video2", "/dev/video10"]
    found = list_cameras()
    with pytest.raises(SourceError) as exc:
        open_source(57)
    msg = str(exc.value)
    assert "camera 57 cannot be opened" in msg
    assert (", ".join(found) in msg) if found else ("no /dev/video* devices found" in msg)


def test_gstreamer_and_picamera_explain_what_is_missing() -> None:
    if not opencv_has("GStreamer"):
        with pytest.raises(SourceError, match="no GStreamer support"):
            open_source("videotestsrc ! videoconvert ! appsink")
    try:
        import picamera2  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailableError, match="picamera2"):
            open_source("picamera")


# -- live sources: newest frame only, reconnects ---------------------------------------------------

class Ticker:
    """A capture that makes a frame every ``period`` s (index coded in pixel [0, 0]), fails after
    ``fail_after`` frames; what a camera driver looks like to :class:`LiveSource`."""

    def __init__(self, period: float, fail_after: Optional[int] = None) -> None:
        self.period, self.fail_after, self.n = period, fail_after, 0
        self.released = False

    def read(self):
        if self.fail_after is not None and self.n >= self.fail_after:
            return False, None
        time.sleep(self.period)
        img = np.zeros((8, 8, 3), np.uint8)
        img[0, 0, 0] = self.n % 256
        self.n += 1
        return True, img

    def release(self) -> None:
        self.released = True


def test_live_source_keeps_only_the_newest_frame() -> None:
    src = LiveSource(lambda: Ticker(0.005), "ticker")
    try:
        got = []
        for frame in src:
            got.append((frame.index, frame.age))
            time.sleep(0.05)  # a consumer 10x slower than the source
            if len(got) == 10:
                break
    finally:
        src.close()
    indices = [i for i, _ in got]
    assert indices == sorted(indices) and indices[-1] - indices[0] >= 30  # frames were skipped
    assert max(age for _, age in got) < 0.05  # ... and each one delivered was fresh
    assert src.stats["dropped"] > 0


def test_live_source_reconnects_with_backoff(caplog) -> None:
    opened: List[float] = []
    plan = ["ok", "fail", "fail", "ok"]

    def open_fn():
        opened.append(time.monotonic())
        if plan[len(opened) - 1] == "fail":
            raise SourceError("device busy")
        return Ticker(0.002, fail_after=5)

    with caplog.at_level(logging.WARNING, logger="edgeseg.live.sources"):
        src = LiveSource(open_fn, "flaky", backoff=(0.05, 1.0), reconnect_timeout=5.0)
        frames = []
        for f in src.frames():
            frames.append(f)
            if len(opened) == 4 and len(frames) >= 3 and f.timestamp > opened[-1]:
                break
        src.close()
    assert len(opened) == 4
    gaps = np.diff(opened[1:])  # 0.05 s after the loss, then doubled: 0.1 s, 0.2 s
    assert gaps[0] >= 0.09 and gaps[1] >= 0.18, gaps
    assert src.stats["reconnects"] == 1
    assert "reconnecting" in caplog.text and "attempt 1 failed" in caplog.text and "reconnected" in caplog.text


def test_live_source_gives_up_after_reconnect_timeout() -> None:
    calls = []

    def open_fn():
        calls.append(1)
        if len(calls) > 1:
            raise SourceError("stream gone")
        return Ticker(0.001, fail_after=3)

    src = LiveSource(open_fn, "gone", backoff=(0.02, 0.05), reconnect_timeout=0.3)
    with pytest.raises(SourceError, match="not back after"):
        for _ in src:
            pass
    src.close()


@contextlib.contextmanager
def mjpeg_server() -> Iterator[Any]:
    """The preview server publishing a changing 160x120 image every 10 ms (a live MJPEG stream)."""
    from edgeseg.live.server import PreviewServer

    server = PreviewServer("127.0.0.1", 0).start()
    stop = threading.Event()

    def produce() -> None:
        i = 0
        while not stop.is_set():
            img = np.full((120, 160, 3), (i * 7) % 256, np.uint8)
            server.publish(cv2.imencode(".jpg", img)[1].tobytes(), {"frame": i})
            i += 1
            time.sleep(0.01)

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    try:
        yield server
    finally:
        stop.set()
        t.join()
        server.close()


def test_live_mjpeg_over_http_with_ffmpeg() -> None:
    """A real MJPEG HTTP stream (the preview server) read through OpenCV's FFmpeg backend."""
    with mjpeg_server() as server:
        src = open_source(f"http://127.0.0.1:{server.port}/stream.mjpg", timeout=5.0)
        assert src.live
        frames = []
        for f in src:
            frames.append(f)
            time.sleep(0.1)  # slow consumer
            if len(frames) == 5:
                break
        src.close()
    assert all(f.image.shape == (120, 160, 3) for f in frames)
    assert frames[-1].index - frames[0].index > 4 * 2  # the grabber kept reading; we got the newest
    assert src.stats["dropped"] > 0


def test_hls_playlist_over_http(tmp_path: Path) -> None:
    """An HLS playlist (MPEG-TS segments) served over HTTP, read through FFmpeg."""
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    for k in range(2):
        w = cv2.VideoWriter(str(tmp_path / f"seg{k}.ts"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (160, 120))
        if not w.isOpened():
            pytest.skip("this OpenCV cannot write MPEG-TS segments")
        for i in range(10):
            w.write(np.full((120, 160, 3), 10 * (i + 10 * k), np.uint8))
        w.release()
    (tmp_path / "live.m3u8").write_text(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n"
        + "".join(f"#EXTINF:1.0,\nseg{k}.ts\n" for k in range(2)) + "#EXT-X-ENDLIST\n")

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/live.m3u8"
        frames = list(open_source(url, live=False))  # --every-frame: the whole playlist, in order
        assert len(frames) == 20 and [f.index for f in frames] == list(range(20))
        levels = [int(np.median(f.image)) for f in frames]
        assert levels == sorted(levels) and levels[-1] > levels[0] + 100
        live = open_source(url)
        assert live.live
        first = next(iter(live))
        live.close()
        assert first.image.shape == (120, 160, 3)
    finally:
        server.shutdown()
        server.server_close()


# -- failures, resources, environment ---------------------------------------------------------------

class Broken(Ticker):
    """A capture whose driver raises (a bug, not a lost stream) after ``fail_after`` frames."""

    def read(self):
        if self.n >= self.fail_after:
            raise ValueError("driver bug")
        return super().read()


def test_a_read_exception_ends_the_stream_instead_of_reconnecting() -> None:
    opened: List[int] = []

    def open_fn():
        opened.append(1)
        return Broken(0.002, fail_after=3)

    src = LiveSource(open_fn, "broken", backoff=(0.01, 0.02))
    deadline = time.monotonic() + 3.0
    with pytest.raises(SourceError, match="broken: reading a frame failed: ValueError: driver bug") as exc:
        for _ in src:
            if time.monotonic() > deadline:  # the old behaviour: reconnecting for ever
                break
    src.close()
    assert isinstance(exc.value.__cause__, ValueError)
    assert len(opened) == 1 and src.stats["reconnects"] == 0



def test_an_every_frame_stream_closed_unread_releases_its_connection() -> None:
    with mjpeg_server() as server:
        src = open_source(f"http://127.0.0.1:{server.port}/stream.mjpg", live=False, timeout=5.0)
        assert not src.live
        assert wait_for(lambda: server.clients == 1), "FFmpeg did not connect"
        src.close()  # never iterated
        assert wait_for(lambda: server.clients == 0), "the capture still holds the connection"
        assert list(src) == []


def test_opening_a_stream_never_changes_the_environment(monkeypatch) -> None:
    """Grabber threads reopen streams while other threads run: the environment must stay as it is."""
    key = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
    monkeypatch.delenv(key, raising=False)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)  # connections are accepted by the kernel and never answered: the open waits
    seen: List[Optional[str]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(os.environ.get(key))
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        t0 = time.monotonic()
        with pytest.raises(SourceError, match="cannot open the stream"):
            open_source(f"rtsp://127.0.0.1:{silent.getsockname()[1]}/cam", timeout=1.0)
        waited = time.monotonic() - t0
    finally:
        stop.set()
        watcher.join()
        silent.close()
    assert waited >= 0.5 and len(seen) > 20  # the watcher really looked while OpenCV waited
    assert set(seen) == {None}


def test_one_camera_lister_for_sources_and_doctor(tmp_path: Path) -> None:
    from edgeseg.live.sources import camera_devices
    from edgeseg.tools import doctor

    (tmp_path / "dev").mkdir()
    for name in ("video3", "video1", "video-x"):
        (tmp_path / "dev" / name).write_text("")
    (tmp_path / "sys" / "class" / "video4linux" / "video3").mkdir(parents=True)
    (tmp_path / "sys" / "class" / "video4linux" / "video3" / "name").write_text("USB cam\n")
    assert camera_devices(tmp_path) == [{"device": "/dev/video1", "index": "1", "name": ""},
                                        {"device": "/dev/video3", "index": "3", "name": "USB cam"}]
    assert list_cameras(tmp_path) == ["/dev/video1", "/dev/video3"]
    assert doctor._cameras(tmp_path, "Linux")["devices"] == camera_devices(tmp_path)
    assert doctor.list_cameras is list_cameras
