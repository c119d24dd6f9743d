"""``--mqtt mqtt://HOST[:PORT]/TOPIC``: one JSON message per frame (or per change) to an MQTT broker."""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, Optional, Tuple
from urllib.parse import unquote, urlsplit

from ...errors import BackendUnavailableError, InputError
from .base import MASK_FORMATS, Packet, Sink, SinkContext, SinkOption, SinkSpec, register

__all__ = ["MqttSink", "parse_mqtt_url"]

log = logging.getLogger("edgeseg.live.sinks")


def parse_mqtt_url(url: str) -> Dict[str, Any]:
    """``mqtt[s]://[user[:password]@]host[:port]/topic/path`` -> host, port, topic, tls, username, password.
    Raises :class:`InputError` for anything else."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise InputError(f"--mqtt {url!r}: expected mqtt://HOST[:PORT]/TOPIC (or mqtts:// for TLS)")
    tls = scheme in ("mqtts", "ssl")
    topic = unquote(parts.path.lstrip("/"))
    if not parts.hostname:
        raise InputError(f"--mqtt {url!r}: no broker host (expected mqtt://HOST[:PORT]/TOPIC)")
    if not topic:
        raise InputError(f"--mqtt {url!r}: no topic (expected mqtt://HOST[:PORT]/TOPIC, e.g. mqtt://localhost/edgeseg/cam1)")
    if "+" in topic or "#" in topic or parts.fragment or url.endswith("#"):
        raise InputError(f"--mqtt {url!r}: the topic may not contain wildcards (+ or #) when publishing")
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as exc:
        raise InputError(f"--mqtt {url!r}: bad port: {exc}") from exc
    return {"host": parts.hostname, "port": port, "topic": topic, "tls": tls,
            "username": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password else None}


class MqttSink(Sink):
    """One JSON message (:meth:`Packet.record`) per frame to an MQTT broker (paho-mqtt, extra ``mqtt``).

    ``on_change=True`` publishes only when the detected classes and their counts differ from the last
    message actually delivered (boxes moving do not count), plus the first frame. The client
    reconnects by itself with a 1-30 s backoff when the broker goes away; messages published while it
    is disconnected are dropped and counted in :attr:`dropped` (never queued without bound).
    """

    def __init__(self, url: str, *, on_change: bool = False, masks: Optional[str] = None, qos: int = 0,
                 retain: bool = False, client_id: Optional[str] = None, connect_timeout: float = 5.0,
                 keepalive: int = 30) -> None:
        try:
            import paho.mqtt.client as mqtt
        except ImportError as exc:
            raise BackendUnavailableError(
                "--mqtt needs the paho-mqtt package, which is not installed: pip install 'edgeseg[mqtt]'") from exc
        import threading

        cfg = parse_mqtt_url(url)
        self._cfg = cfg
        self._client_id = client_id
        self._connect_timeout = connect_timeout
        self._keepalive = keepalive
        if qos not in (0, 1, 2):
            raise InputError(f"mqtt qos must be 0, 1 or 2, got {qos}")
        self.topic = cfg["topic"]
        self.url = f"mqtt{'s' if cfg['tls'] else ''}://{cfg['host']}:{cfg['port']}/{self.topic}"
        self.on_change = on_change
        self.masks = masks
        self.qos = qos
        self.retain = retain
        self.sent = 0
        self.dropped = 0
        self.unchanged = 0
        self._last_key: Optional[Tuple[Any, ...]] = None
        self._last_info: Any = None
        self._connected = threading.Event()
        self._mqtt = mqtt
        self.client: Any = None

    def start(self) -> None:
        """Start the client and wait up to ``connect_timeout`` s for the broker (then go on: the
        client keeps retrying, and frames are dropped and counted until it is connected)."""
        mqtt, cfg = self._mqtt, self._cfg
        client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                             client_id=self._client_id or f"edgeseg-{os.getpid()}-{id(self) & 0xFFFF:x}")
        if cfg["username"]:
            client.username_pw_set(cfg["username"], cfg["password"])
        if cfg["tls"]:
            client.tls_set()
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.max_queued_messages_set(64)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        try:
            client.connect_async(cfg["host"], cfg["port"], keepalive=self._keepalive)
        except (OSError, ValueError) as exc:
            raise InputError(f"--mqtt {self.url}: cannot start connecting: {exc}") from exc
        self.client = client
        client.loop_start()
        if not self._connected.wait(self._connect_timeout):
            log.warning("MQTT broker %s not reachable yet; messages are dropped until it is (retrying)", self.url)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any = None) -> None:
        if getattr(reason_code, "is_failure", False):
            log.warning("MQTT broker %s refused the connection: %s", self.url, reason_code)
            return
        if self.sent or self.dropped:
            log.warning("MQTT reconnected to %s (%d messages dropped so far)", self.url, self.dropped)
        else:
            log.info("MQTT connected to %s", self.url)
        self._connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any = None) -> None:
        if self._connected.is_set():
            log.warning("MQTT connection to %s lost (%s); reconnecting", self.url, reason_code)
        self._connected.clear()

    def write(self, packet: Packet) -> None:
        self.open()
        res = packet.result
        key: Optional[Tuple[Any, ...]] = None
        if self.on_change:
            counts: Dict[str, int] = {}
            for n in res.class_names:
                counts[n] = counts.get(n, 0) + 1
            key = tuple(sorted(counts.items()))
            if packet.tracks is not None:
                key = (key, packet.tracks.counts_key())
            if key == self._last_key:
                self.unchanged += 1
                return
        if not self.client.is_connected():
            self.dropped += 1
            return
        payload = json.dumps(packet.record(self.masks), separators=(",", ":"))
        info = self.client.publish(self.topic, payload, qos=self.qos, retain=self.retain)
        if info.rc != self._mqtt.MQTT_ERR_SUCCESS:
            self.dropped += 1
            return
        self.sent += 1
        self._last_info = info
        if self.on_change:
            self._last_key = key

    def close(self) -> None:
        if self.client is None:
            return
        try:
            if self._last_info is not None and self.client.is_connected():
                try:
                    self._last_info.wait_for_publish(timeout=2.0)
                except (RuntimeError, ValueError):
                    pass
            self.client.disconnect()
        finally:
            self.client.loop_stop()
            self.client = None
        if self.dropped:
            log.warning("MQTT: %d messages sent, %d dropped while the broker was unreachable", self.sent, self.dropped)


def _build(opts: Dict[str, Any], ctx: SinkContext) -> Optional[Sink]:
    if not opts.get("mqtt"):
        if opts.get("mqtt_on_change"):
            raise InputError("--mqtt-on-change needs --mqtt mqtt://HOST/TOPIC")
        return None
    return MqttSink(opts["mqtt"], on_change=bool(opts.get("mqtt_on_change")),
                    masks=MASK_FORMATS[opts.get("masks_format") or "none"], qos=int(opts.get("mqtt_qos") or 0))


register(SinkSpec(
    name="mqtt",
    order=40,
    commands=("run",),
    options=(
        SinkOption("--mqtt", "mqtt", metavar="mqtt://HOST[:PORT]/TOPIC",
                   help="Publish one JSON message per frame to an MQTT broker (extra 'mqtt')."),
        SinkOption("--mqtt-on-change", "mqtt_on_change", is_flag=True,
                   help="With --mqtt: publish only when the detected classes/counts change."),
        SinkOption("--mqtt-qos", "mqtt_qos", type=int, range=(0, 2), default=0, help="MQTT quality of service."),
    ),
    build=_build,
))
