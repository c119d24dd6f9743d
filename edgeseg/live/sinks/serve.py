"""``--serve [HOST:]PORT``: the annotated view and the stats on a local web page
(:mod:`edgeseg.live.server`)."""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

from ...errors import InputError
from .base import Packet, Sink, SinkContext, SinkOption, SinkSpec, register

__all__ = ["ServeSink"]


class ServeSink(Sink):
    """Publishes each annotated frame (JPEG) and the stats to a :class:`~edgeseg.live.server.PreviewServer`.
    The address is checked here; :meth:`open` binds and starts the server (a port in use fails there)."""

    def __init__(self, bind: str = "8080", token: Optional[str] = None, quality: int = 80,
                 max_width: Optional[int] = 1280, source_name: str = "") -> None:
        from ..server import parse_bind

        self.host, self.port = parse_bind(bind)
        self.token = token
        self.source_name = source_name
        self.quality = int(quality)
        self.max_width = max_width
        self.server: Any = None
        self._times: List[float] = []

    def start(self) -> None:
        from ..server import PreviewServer

        server = PreviewServer(self.host, self.port, token=self.token, source_name=self.source_name)
        server.start()
        self.server = server

    @property
    def url(self) -> str:
        return self.server.url if self.server is not None else f"http://{self.host}:{self.port}/"

    def write(self, packet: Packet) -> None:
        import cv2

        self.open()
        img = packet.annotated
        if self.max_width and img.shape[1] > self.max_width:
            scale = self.max_width / img.shape[1]
            img = cv2.resize(img, (self.max_width, max(1, int(round(img.shape[0] * scale)))), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:  # pragma: no cover
            return
        now = time.monotonic()
        self._times.append(now)
        self._times = [t for t in self._times if now - t <= 2.0][-120:]
        span = self._times[-1] - self._times[0]
        fps = (len(self._times) - 1) / span if len(self._times) > 1 and span > 0 else 0.0
        res = packet.result
        counts: Dict[str, int] = {}
        for n in res.class_names:
            counts[n] = counts.get(n, 0) + 1
        stats = {
            "frame": int(packet.frame.index),
            "fps": round(fps, 2),
            "ms": {k: round(float(v), 2) for k, v in res.speed.items()},
            "counts": counts,
            "detections": [{"class_name": n, "score": round(float(s), 3), "box": [round(float(v), 1) for v in b]}
                           for n, s, b in zip(res.class_names, res.scores, res.boxes)][:50],
            "image_size": [int(res.orig_shape[0]), int(res.orig_shape[1])],  # [h, w], as in the JSON records
        }
        if res.track_ids is not None:
            for d, t in zip(stats["detections"], res.track_ids):
                d["track_id"] = int(t)
        if packet.tracks is not None:
            stats.update(packet.tracks.record())
        self.server.publish(buf.tobytes(), stats)

    def close(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.close()


def _build(opts: Dict[str, Any], ctx: SinkContext) -> Optional[Sink]:
    if opts.get("serve") is None:
        if opts.get("token"):
            raise InputError("--token is for --serve; add --serve [HOST:]PORT")
        return None
    return ServeSink(opts["serve"], token=opts.get("token"), source_name=ctx.source_name)


register(SinkSpec(
    name="serve",
    order=30,
    commands=("run",),
    options=(
        SinkOption("--serve", "serve", metavar="[HOST:]PORT",
                   help="Serve a live page with the annotated view and stats (binds 127.0.0.1 unless HOST is given)."),
        SinkOption("--token", "token", envvar="EDGESEG_TOKEN",
                   help="Require this token for --serve (?token=..., or env EDGESEG_TOKEN)."),
    ),
    build=_build,
))
