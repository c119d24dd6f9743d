"""Tracking end to end with the real 320 ONNX model: ``edgeseg run --track --json`` on a rendered clip
with ground-truth identities (real persons cut from bus.jpg, crossing and occluding each other),
``Runtime.stream(tracker=...)``, and what the sinks carry (JSON, /stats.json, MQTT on count change)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest

import _tracking_clip as clip
from _mjpeg import free_port

cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")

from edgeseg.eval.mot import mot_metrics  # noqa: E402

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
MODEL = ASSETS / "models" / "yolov8n-seg-320-int8dyn.onnx"
BUS = ASSETS / "images" / "bus.jpg"
REF = ASSETS / "reference" / "yolov8n-seg-320-int8dyn__bus.json"
EDGESEG = [sys.executable, "-c", "from edgeseg.cli import main; main(prog_name='edgeseg')"]

needs_assets = pytest.mark.skipif(not (MODEL.is_file() and BUS.is_file() and REF.is_file()),
                                  reason=f"test assets not found under {ASSETS}")


@pytest.fixture(scope="module")
def clip_video(tmp_path_factory) -> Path:
    if not (BUS.is_file() and REF.is_file()):
        pytest.skip(f"test assets not found under {ASSETS}")
    sprites = clip.sprites_from_reference(cv2.imread(str(BUS)), json.loads(REF.read_text()))
    path = tmp_path_factory.mktemp("clip") / "crossing.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), clip.FPS, (clip.W, clip.H))
    for img in clip.render(sprites=sprites):
        w.write(img)
    w.release()
    return path


def _records_metrics(records: List[Dict[str, Any]]) -> Dict[str, Any]:
    gt = clip.ground_truth()
    frames = []
    for rec in records:
        g = gt[rec["frame"]]
        dets = rec["detections"]
        frames.append((g["ids"], g["boxes"], [d["track_id"] for d in dets], np.array([d["box"] for d in dets]).reshape(-1, 4)))
    return mot_metrics(frames)


@needs_assets
def test_run_track_json_identities_and_counts(clip_video: Path, tmp_path: Path) -> None:
    out = tmp_path / "tracks.jsonl"
    args = EDGESEG + ["run", "-m", str(MODEL), "-s", str(clip_video), "--track", "--json", str(out), "--masks", "rle",
                      "--count-line", clip.LINES["h"], "--count-line", clip.LINES["v"], "--zone", clip.ZONES["right"]]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(clip.N_FRAMES))
    dets = [d for r in records for d in r["detections"]]
    assert dets and all(isinstance(d["track_id"], int) and "mask_rle" in d for d in dets)
    m = _records_metrics(records)
    print("edgeseg run --track on the clip:", m)
    assert m["idf1"] >= 0.85, m
    assert m["id_switches"] <= 2, m
    last = records[-1]
    assert last["analytics"]["lines"] == clip.EXPECTED_LINES
    zone = last["analytics"]["zones"]["right"]
    assert (zone["entered"], zone["exited"]) == (clip.EXPECTED_ZONES["right"]["entered"], clip.EXPECTED_ZONES["right"]["exited"])
    crossings = [e for r in records for e in r["events"] if e["type"] == "line"]
    assert len(crossings) == 4 and all(e["track_id"] >= 1 for e in crossings)
    assert "line h: 2 in, 0 out" in proc.stderr and "zone right:" in proc.stderr and "bytetrack:" in proc.stderr
    # the same run on a video is deterministic
    out2 = tmp_path / "again.jsonl"
    args[args.index(str(out))] = str(out2)
    assert subprocess.run(args + ["-q"], capture_output=True, text=True, timeout=900).returncode == 0
    again = [json.loads(line) for line in out2.read_text().splitlines()]
    assert [[d["track_id"] for d in r["detections"]] for r in again] == [[d["track_id"] for d in r["detections"]] for r in records]


@needs_assets
def test_runtime_stream_tracker_pipelined_equals_sequential(clip_video: Path) -> None:
    from edgeseg import Runtime

    with Runtime(MODEL) as rt:
        seq = list(rt.stream(clip_video, tracker="botsort", pipelined=False, max_frames=40))
        st = rt.stream(clip_video, tracker="botsort", max_frames=40)
        pip = list(st)
        assert rt.conf == 0.25  # the tracker decoded low scores on a view of the model, not on rt
    assert [r.track_ids.tolist() for r in seq] == [r.track_ids.tolist() for r in pip]
    assert all(r.track_ids is not None and "track" in r.speed for r in pip)
    # detections below conf are only kept when they continue a track
    assert all(s >= 0.25 or t >= 0 for r in pip for s, t in zip(r.scores, r.track_ids))
    summary = st.summary()["tracking"]
    assert summary["tracker"] == "botsort" and summary["tracks"] >= 3 and summary["frames"] == 40


def _packet(index: int, ft: Any, res: Any) -> Any:
    from edgeseg.live.sinks import Packet
    from edgeseg.live.sources import Frame

    return Packet(Frame(np.zeros((clip.H, clip.W, 3), np.uint8), index, time.monotonic(), "clip"), res, tracks=ft)


def _tracked_packets(n: int = clip.N_FRAMES) -> List[Any]:
    from edgeseg import Results
    from edgeseg.live.tracking import Analytics, TrackingStage

    an = Analytics.from_specs([clip.LINES["h"]], [clip.ZONES["right"]])
    stage = TrackingStage("bytetrack", an, fps=clip.FPS)
    packets = []
    for f, d in enumerate(clip.noisy_detections(clip.ground_truth(), seed=0)[:n]):
        res, ft = stage(Results(d["boxes"], d["scores"], d["classes"], {0: "person"}, (clip.H, clip.W)), f)
        packets.append(_packet(f, ft, res))
    return packets


def test_preview_stats_carry_track_ids_and_counts() -> None:
    from edgeseg.live.sinks import ServeSink

    sink = ServeSink(f"127.0.0.1:{free_port()}")
    try:
        packets = _tracked_packets(60)
        for p in packets:
            sink.write(p)
        stats = json.loads(urllib.request.urlopen(sink.url.rstrip("/") + "/stats.json", timeout=10).read())
        assert stats["frame"] == 59
        assert [d["track_id"] for d in stats["detections"]] == packets[-1].result.track_ids.tolist()
        assert stats["analytics"]["lines"]["h"] == {"in": 2, "out": 0}
        assert "zones" in stats["analytics"] and "events" in stats
        page = urllib.request.urlopen(sink.url, timeout=10).read().decode()
        assert 'id="counts"' in page
        # the annotated frame shows the line, the zone and the trails
        img = packets[-1].annotated
        assert img[180, 5:600].any(axis=1).mean() > 0.9  # line h drawn across the image
    finally:
        sink.close()


def test_mqtt_on_change_sends_when_counts_change(tmp_path: Path) -> None:
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed (pip install 'edgeseg[mqtt]')")
    from test_mqtt import MOSQUITTO, Broker, Subscriber, wait_for

    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install -y mosquitto; `make test` installs it)")
    from edgeseg.live.sinks import MqttSink

    broker = Broker(tmp_path).start()
    sub = Subscriber(broker.port, "edgeseg/tracks")
    sink = MqttSink(f"mqtt://127.0.0.1:{broker.port}/edgeseg/tracks", on_change=True)
    try:
        packets = _tracked_packets()
        keys = []
        for p in packets:
            key = (tuple(sorted({n: p.result.class_names.count(n) for n in p.result.class_names}.items())),
                   p.tracks.counts_key())
            if not keys or keys[-1] != key:
                keys.append(key)
            sink.write(p)
        assert wait_for(lambda: sub.count() >= len(keys), 15)
        time.sleep(0.3)
        got = [m for _, m in sub.messages]
        assert len(got) == len(keys) == sink.sent
        # every line crossing is in some message's events, and the last message has the final counts
        crossing_frames = {p.frame.index for p in packets if any(e["type"] == "line" for e in p.tracks.events)}
        assert crossing_frames <= {m["frame"] for m in got}
        assert got[-1]["analytics"]["lines"]["h"] == {"in": 2, "out": 0}
        assert all("track_id" in d for m in got for d in m["detections"])
    finally:
        sink.close()
        sub.close()
        broker.stop()
