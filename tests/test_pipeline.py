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

from edgeseg.live.pipeline import stream  # noqa: E402
from edgeseg.live.sinks import JsonSink, Sink  # noqa: E402
from edgeseg.live.sources import LiveSource  # noqa: E402

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
