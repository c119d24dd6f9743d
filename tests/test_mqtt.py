"""``--mqtt`` against a real Mosquitto broker (Debian ``mosquitto``) started on a free loopback port.

Messages must arrive and parse; restarting the broker mid-run may lose only the messages published
while it was down (the sink drops and counts them, then reconnects by itself).
"""
from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, List, Optional, Tuple

import numpy as np
import pytest

from _mjpeg import free_port, start_mjpeg_server

cv2 = pytest.importorskip("cv2")
mqtt = pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed (pip install 'edgeseg[mqtt]')")

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
MODEL = ASSETS / "models" / "yolov8n-seg-320-int8dyn.onnx"
BUS = ASSETS / "images" / "bus.jpg"
EDGESEG = [sys.executable, "-c", "from edgeseg.cli import main; main(prog_name='edgeseg')"]
MOSQUITTO = shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
                                               if Path(p).is_file()), None)

pytestmark = pytest.mark.skipif(MOSQUITTO is None,
                                reason="mosquitto is not installed (apt-get install -y mosquitto; `make test` installs it)")





class Broker:
    """A Mosquitto process on 127.0.0.1:port (anonymous, no persistence) that can be restarted."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.conf = tmp / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.log = tmp / "mosquitto.log"
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "Broker":
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=open(self.log, "a"),
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


class Subscriber:
    """Collects (arrival time, parsed JSON) of every message on ``topic``."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: List[Tuple[float, Any]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.topic = topic
        self.client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"test-sub-{time.monotonic_ns()}")
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe(topic, qos=0)
        self.client.on_subscribe = lambda c, u, mid, rcs, p=None: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        assert self.subscribed.wait(10), "test subscriber could not subscribe"

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self.lock:
            self.messages.append((time.time(), json.loads(msg.payload)))

    def count(self) -> int:
        with self.lock:
            return len(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_for(fn, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return True
        time.sleep(0.05)
    return False


def _packet(names: List[str], index: int) -> Any:
    from edgeseg.results import Results
    from edgeseg.live.sinks import Packet
    from edgeseg.live.sources import Frame

    table = {"person": 0, "bus": 5}
    n = len(names)
    res = Results(boxes=np.tile(np.array([[10, 20, 110, 220]], np.float32), (n, 1)),
                  scores=np.full(n, 0.9, np.float32), class_ids=np.array([table[x] for x in names], np.int64),
                  names={0: "person", 5: "bus"}, orig_shape=(240, 320),
                  speed={"preprocess": 1.0, "inference": 2.0, "postprocess": 3.0, "frame_age": 7.0})
    return Packet(Frame(np.zeros((240, 320, 3), np.uint8), index, time.monotonic(), "cam"), res)


def test_sink_messages_on_change_and_drops_while_down(tmp_path: Path) -> None:
    from edgeseg.live.sinks import MqttSink

    broker = Broker(tmp_path).start()
    sub = Subscriber(broker.port, "edgeseg/unit")
    sink = MqttSink(f"mqtt://127.0.0.1:{broker.port}/edgeseg/unit", on_change=True)
    try:
        scenes = [["bus"], ["bus"], ["bus", "person"], ["person", "bus"], [], [], ["bus"]]
        for i, names in enumerate(scenes):
            sink.write(_packet(names, i))
        assert wait_for(lambda: sub.count() >= 4, 10)
        time.sleep(0.3)
        got = [m for _, m in sub.messages]
        assert [m["frame"] for m in got] == [0, 2, 4, 6]  # only when the classes/counts change
        assert sorted(d["class_name"] for d in got[1]["detections"]) == ["bus", "person"]
        assert got[2]["detections"] == [] and got[1]["speed_ms"]["inference"] == 2.0
        assert sink.sent == 4 and sink.unchanged == 3 and sink.dropped == 0
        # broker down: publishes are dropped and counted, not queued
        broker.stop()
        assert wait_for(lambda: not sink.client.is_connected(), 10)
        for i, names in enumerate([["person"], ["person", "person"], ["person"]], start=10):
            sink.write(_packet(names, i))
        assert sink.dropped == 3
        # broker back: the sink reconnects by itself; the next change is delivered
        broker.start()
        sub.close()
        sub = Subscriber(broker.port, "edgeseg/unit")
        assert wait_for(lambda: sink.client.is_connected(), 40), "the sink did not reconnect"
        sink.write(_packet(["bus", "bus"], 20))
        assert wait_for(lambda: sub.count() >= 1, 10)
        assert sub.messages[0][1]["frame"] == 20
    finally:
        sink.close()
        sub.close()
        broker.stop()


def test_bad_urls() -> None:
    from edgeseg.errors import InputError
    from edgeseg.live.sinks import parse_mqtt_url

    assert parse_mqtt_url("mqtt://u:p%40ss@broker.local:1884/a/b") == {
        "host": "broker.local", "port": 1884, "topic": "a/b", "tls": False, "username": "u", "password": "p@ss"}
    assert parse_mqtt_url("mqtts://h/t")["port"] == 8883
    for bad in ("http://h/t", "mqtt://h", "mqtt:///t", "mqtt://h/a/#", "mqtt://h:99999/t"):
        with pytest.raises(InputError):
            parse_mqtt_url(bad)


@pytest.mark.skipif(not (MODEL.is_file() and BUS.is_file()), reason=f"test assets not found under {ASSETS}")
def test_run_publishes_every_frame_and_survives_broker_restart(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    broker = Broker(tmp_path).start()
    sub = Subscriber(broker.port, "edgeseg/cam1")
    src_port = free_port()
    source = start_mjpeg_server(src_port, BUS)
    out_json = tmp_path / "all.jsonl"
    run = subprocess.Popen(EDGESEG + ["run", "-m", str(MODEL), "-s", f"http://127.0.0.1:{src_port}/v.mjpg",
                                      "--mqtt", f"mqtt://127.0.0.1:{broker.port}/edgeseg/cam1",
                                      "--json", str(out_json)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: sub.count() >= 10 or run.poll() is not None, 180), "no MQTT messages arrived"
        assert run.poll() is None, run.stderr.read() if run.stderr else ""
        broker.stop()
        killed = time.time()
        first_sub = sub
        time.sleep(2.0)
        broker.start()
        first_sub.close()
        sub = Subscriber(broker.port, "edgeseg/cam1")  # subscribed again before the publisher's 1 s backoff ends
        assert wait_for(lambda: sub.count() >= 8 or run.poll() is not None, 120), "nothing after the restart"
        run.send_signal(signal.SIGTERM)  # a clean stop: the --json file then holds every frame published
        _, stderr = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
        source.kill()
        source.wait()
        sub.close()
        broker.stop()
    assert run.returncode == 0, stderr
    every = [json.loads(line) for line in out_json.read_text().splitlines()]
    frames = [r["frame"] for r in every]
    published = {r["frame"]: r["time"] + r["speed_ms"]["frame_age"] / 1000.0 for r in every}  # approx. publish time
    before = [m["frame"] for _, m in first_sub.messages]
    after = [m for _, m in sub.messages]
    assert len(before) >= 10 and after, f"messages before/after the restart: {len(before)}/{len(after)}; {stderr}"
    for m in after:  # messages parse and carry the same records as --json
        assert set(m) >= {"frame", "time", "detections", "speed_ms", "image_size"}
        assert "person" in [d["class_name"] for d in m["detections"]]
    # nothing lost while the broker was up: before the kill, and from the publisher's reconnection on
    assert before == frames[:len(before)]
    first_after = after[0]["frame"]
    assert [m["frame"] for m in after] == [f for f in frames if f >= first_after]
    # what was lost was published while the broker was down (0.5 s margin: qos-0 messages in flight at the kill)
    lost = [f for f in frames if before[-1] < f < first_after]
    assert lost, "the restart lost nothing: was the broker really down?"
    for f in lost:
        assert killed - 0.5 <= published[f] <= published[first_after], (f, published[f], killed)
    assert "MQTT connection to" in stderr and "reconnected" in stderr, stderr
    assert any("sent," in line and "dropped" in line for line in stderr.splitlines()), stderr
