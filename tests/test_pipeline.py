"""The threaded pipeline with the real runtime and model: order, equality with the sequential
reference, timings, stopping, error propagation, bounded frame age on a live source."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, List

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")

from _mjpeg import wait_for  # noqa: E402
from edgeseg.live.pipeline import stream  # noqa: E402
from edgeseg.live.sinks import JsonSink, Sink  # noqa: E402
from edgeseg.live.sources import Frame, LiveSource, Source  # noqa: E402
from edgeseg.results import Results  # noqa: E402

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
MODEL = ASSETS / "models" / "yolov8n-seg-320-int8dyn.onnx"
BUS = ASSETS / "images" / "bus.jpg"

pytestmark = pytest.mark.skipif(not (MODEL.is_file() and BUS.is_file()), reason=f"test assets not found under {ASSETS}")


@pytest.fixture(scope="module")
def rt():
    from edgeseg import Runtime

    with Runtime(MODEL) as runtime:
        yield runtime


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "bus.avi"
    img = cv2.imread(str(BUS))
    img = cv2.resize(img, (240, 320))
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (240, 320))
    for i in range(12):
        w.write(np.roll(img, 6 * i, axis=1))
    w.release()
    return path


def _threads() -> List[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("edgeseg-") and t.is_alive()]


def test_pipelined_equals_sequential(rt, video: Path) -> None:
    seq = list(stream(rt, video, pipelined=False))
    pip = list(stream(rt, video))
    assert [r.frame_index for r in pip] == [r.frame_index for r in seq] == list(range(12))
    for a, b in zip(seq, pip):
        np.testing.assert_array_equal(a.class_ids, b.class_ids)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-4)
        np.testing.assert_array_equal(a.masks.dense(), b.masks.dense())
        for key in ("read", "preprocess", "inference", "postprocess", "frame_age", "sinks"):
            assert b.speed[key] >= 0.0
        assert b.speed["frame_age"] >= b.speed["inference"]
        assert b.path == str(video) and b.image is not None
    assert "bus" in pip[0].class_names
    assert not _threads()


def test_runtime_stream_method(rt, video: Path) -> None:
    if not hasattr(rt, "stream"):
        pytest.skip("Runtime.stream not added yet")
    with rt.stream(str(video), max_frames=5) as s:
        got = [r.frame_index for r in s]
    assert got == [0, 1, 2, 3, 4]
    assert s.summary()["frames"] == 5


class Recorder(Sink):
    def __init__(self) -> None:
        self.frames: List[int] = []
        self.closed = False

    def write(self, packet: Any) -> None:
        self.frames.append(packet.frame.index)

    def close(self) -> None:
        self.closed = True


class Exploding(Sink):
    def write(self, packet: Any) -> None:
        if packet.frame.index == 3:
            raise OSError("disk full")


def test_leaving_the_loop_closes_sinks(rt, video: Path, tmp_path: Path) -> None:
    rec, js = Recorder(), JsonSink(tmp_path / "r.jsonl", masks=None)
    for res in stream(rt, video, sinks=[rec, js]):
        if res.frame_index == 4:
            break
    assert rec.closed
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert [json.loads(x)["frame"] for x in lines] == rec.frames == list(range(len(lines)))
    assert len(lines) >= 5
    time.sleep(0.2)
    assert not _threads()


def test_stop_drains_frames_in_flight(rt, video: Path) -> None:
    rec = Recorder()
    s = stream(rt, video, sinks=[rec])
    got = []
    for res in s:
        got.append(res.frame_index)
        if res.frame_index == 2:
            s.stop()
    assert got == list(range(len(got))) and 3 <= len(got) < 12  # in-flight frames still came out, in order
    assert rec.frames == got and rec.closed


def test_sink_error_propagates_and_others_close(rt, video: Path) -> None:
    rec = Recorder()
    with pytest.raises(OSError, match="disk full"):
        for _ in stream(rt, video, sinks=[Exploding(), rec]):
            pass
    assert rec.closed and rec.frames == [0, 1, 2]
    time.sleep(0.2)
    assert not _threads()


def test_max_frames_and_bad_arguments(rt, video: Path) -> None:
    assert len(list(stream(rt, video, max_frames=3))) == 3
    from edgeseg.errors import InputError, SourceError

    with pytest.raises(InputError):
        stream(rt, video, max_frames=0)
    with pytest.raises(SourceError):  # raised when the stream is created, not at the first frame
        stream(rt, "no/such/video.mp4")


class FastCamera:
    """A capture delivering a new frame every 5 ms: faster than inference."""

    def __init__(self, img: np.ndarray) -> None:
        self.img = img

    def read(self):
        time.sleep(0.005)
        return True, self.img.copy()

    def release(self) -> None:
        pass


def test_frame_age_stays_bounded_on_a_fast_live_source(rt) -> None:
    img = cv2.resize(cv2.imread(str(BUS)), (240, 320))
    src = LiveSource(lambda: FastCamera(img), "fast camera")
    results = list(stream(rt, src, max_frames=15))
    assert len(results) == 15
    ages = np.array([r.speed["frame_age"] for r in results])
    work = np.array([r.speed["preprocess"] + r.speed["inference"] + r.speed["postprocess"] for r in results])
    # never more than about two inference periods old (one waiting, one running), and no upward drift
    assert (ages < 2.5 * np.median(work) + 300.0).all(), (ages, work)
    assert np.median(ages[-5:]) < 2.0 * np.median(ages[:5]) + 200.0, ages
    indices = [r.frame_index for r in results]
    assert indices == sorted(indices) and indices[-1] - indices[0] > 15  # frames were skipped, not queued
    assert "read" not in results[0].speed


# -- threads and resources --------------------------------------------------------------------------

def test_frame_fields_are_results_fields_kept_by_indexing(rt, video: Path) -> None:
    for res in stream(rt, video, max_frames=3):
        sub = res[res.class_ids == 0]  # the people, not the bus
        assert 0 < len(sub) < len(res)
        assert (sub.frame_index, sub.frame_time, sub.path) == (res.frame_index, res.frame_time, str(video))
        assert sub.speed["frame_age"] == res.speed["frame_age"]
        assert res.frame_time <= time.monotonic()


class SlowSink(Sink):
    """Blocks inside its first write; records whether close() came while a write was running."""

    def __init__(self, block_s: float) -> None:
        self.block_s = block_s
        self.writing = False
        self.entered = threading.Event()
        self.closed = threading.Event()
        self.closed_during_write = False
        self.close_thread = ""

    def write(self, packet: Any) -> None:
        self.writing = True
        try:
            if not self.entered.is_set():
                self.entered.set()
                time.sleep(self.block_s)
        finally:
            self.writing = False

    def close(self) -> None:
        self.closed_during_write = self.writing
        self.close_thread = threading.current_thread().name
        self.closed.set()


def test_close_never_closes_a_sink_inside_write(rt, video: Path) -> None:
    sink = SlowSink(block_s=1.0)
    s = stream(rt, video, sinks=[sink])
    assert sink.entered.wait(20)
    t0 = time.monotonic()
    s.close(timeout=0.1)  # gives up waiting for the sinks thread ...
    assert time.monotonic() - t0 < 0.9
    assert not sink.closed.is_set()  # ... and so leaves the sink to it
    assert sink.closed.wait(10)
    assert not sink.closed_during_write and sink.close_thread == "edgeseg-sinks"
    assert wait_for(lambda: not _threads())


def test_close_waits_for_the_sinks_thread_and_closes_in_the_caller(rt, video: Path) -> None:
    sink = SlowSink(block_s=0.5)
    s = stream(rt, video, sinks=[sink])
    assert sink.entered.wait(20)
    s.close()  # waits for the write to return
    assert sink.closed.is_set() and not sink.closed_during_write
    assert sink.close_thread == threading.current_thread().name


class SlowSource(Source):
    """A file-like source whose third read blocks; records whether close() came during a read."""

    live = False
    name = "slow source"

    def __init__(self, img: np.ndarray) -> None:
        self.img = img
        self.reading = False
        self.entered = threading.Event()
        self.closed = threading.Event()
        self.closed_during_read = False

    def frames(self, stop=None):
        for i in range(100):
            self.reading = True
            if i == 2:
                self.entered.set()
                time.sleep(1.0)
            self.reading = False
            if stop is not None and stop.is_set():
                return
            yield Frame(self.img, i, time.monotonic(), self.name)

    def close(self) -> None:
        self.closed_during_read = self.reading
        self.closed.set()


def test_close_never_closes_the_source_inside_read(rt) -> None:
    src = SlowSource(cv2.resize(cv2.imread(str(BUS)), (160, 120)))
    s = stream(rt, src)
    assert src.entered.wait(20)
    s.close(timeout=0.1)
    assert not src.closed.is_set()
    assert src.closed.wait(10) and not src.closed_during_read
    assert wait_for(lambda: not _threads())


class CountingSource(Source):
    live = False
    name = "counting"

    def __init__(self, n: int) -> None:
        self.n = n

    def frames(self, stop=None):
        img = np.zeros((48, 64, 3), np.uint8)
        for i in range(self.n):
            if stop is not None and stop.is_set():
                return
            yield Frame(img, i, time.monotonic(), self.name)


def _empty_results(img: np.ndarray) -> Results:
    """A runtime in the form stream() accepts besides Runtime: a callable image -> Results."""
    return Results(np.zeros((0, 4)), [], [], {}, img.shape[:2])


class NewKeys(Sink):
    """Adds a new timing key per frame, so the stream's per-stage record grows while it runs."""

    def write(self, packet: Any) -> None:
        packet.result.speed[f"custom{packet.frame.index}"] = 1.0


def test_summary_while_the_sinks_thread_records() -> None:
    import sys

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    errors: List[BaseException] = []
    try:
        s = stream(_empty_results, CountingSource(400), sinks=[NewKeys()])
        done = threading.Event()

        def poll_summary() -> None:
            while not done.is_set():
                try:
                    s.summary()
                except BaseException as exc:  # RuntimeError: dictionary changed size during iteration
                    errors.append(exc)
                    return

        t = threading.Thread(target=poll_summary)
        t.start()
        n = 0
        for _ in s:
            n += 1
        done.set()
        t.join()
    finally:
        sys.setswitchinterval(old)
    assert not errors, errors[0]
    assert n == 400 and s.summary()["frames"] == 400 and len(s.summary()["ms"]) > 400


class Poller(Sink):
    """A sink with main-thread work (like the --show window): poll() must run in the iterating thread."""

    def __init__(self) -> None:
        self.write_threads: set = set()
        self.poll_threads: set = set()
        self.polls = 0

    def write(self, packet: Any) -> None:
        self.write_threads.add(threading.current_thread().name)

    def poll(self) -> None:
        self.poll_threads.add(threading.current_thread().name)
        self.polls += 1


@pytest.mark.parametrize("pipelined", [True, False])
def test_sink_poll_runs_in_the_thread_iterating_the_stream(pipelined: bool) -> None:
    sink = Poller()
    n = sum(1 for _ in stream(_empty_results, CountingSource(20), sinks=[sink], pipelined=pipelined))
    me = threading.current_thread().name
    assert n == 20 and sink.polls >= 20 and sink.poll_threads == {me}
    assert sink.write_threads == ({"edgeseg-sinks"} if pipelined else {me})


def test_show_sink_draws_in_the_sinks_thread_and_shows_in_the_main_thread(tmp_path: Path) -> None:
    from edgeseg.live.sinks import ShowSink
    from edgeseg.live.sources import opencv_has

    if not opencv_has("GUI"):
        pytest.skip("this OpenCV has no GUI (opencv-python-headless): --show cannot open a window here")
    try:
        sink = ShowSink("edgeseg test")
    except Exception as exc:  # no display
        pytest.skip(str(exc))
    n = sum(1 for _ in stream(_empty_results, CountingSource(5), sinks=[sink]))
    assert n == 5 and sink._gui_thread is threading.current_thread()


def test_close_from_another_thread_ends_the_iteration(rt) -> None:
    src = SlowSource(cv2.resize(cv2.imread(str(BUS)), (160, 120)))  # frame 2 takes 1 s to read
    s = stream(rt, src)
    got: List[int] = []

    def consume() -> None:
        for res in s:
            got.append(res.frame_index)
            if len(got) == 2:  # the iterating thread now waits for frame 2 when close() comes
                threading.Timer(0.3, s.close).start()

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "the iterating thread still waits for results after close()"
    assert got == [0, 1]

