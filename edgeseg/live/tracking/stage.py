"""The tracking stage of the live pipeline: tracker + trails + analytics, one call per frame.

:class:`TrackingStage` runs in the pipeline's postprocess thread right after a frame's Results are
decoded (frames arrive there in capture order). It sets ``Results.track_ids``, drops detections
that scored below ``keep_conf`` and joined no track (ByteTrack's low-score boxes are used only to
keep tracks alive), and returns a :class:`FrameTracks` with what the sinks show: the trails of the
tracks in this frame, the line/zone counts and this frame's events.

Time: files and videos step by frame index (deterministic: the same video gives the same ids);
live sources step by capture timestamps, so a frame skipped to stay live advances the tracks by
the time that passed (``dt`` in frames = elapsed seconds x frame rate).
"""
from __future__ import annotations

import dataclasses
import time as _time
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Tuple

import numpy as np

from ...errors import InputError
from .analytics import Analytics
from .bytetrack import LOST, TRACKED, ByteTracker
from .config import TrackerConfig, load_config

__all__ = ["TrackingStage", "FrameTracks", "make_tracker", "pipeline_stage", "TRACKERS"]


def _botsort() -> type:
    from .botsort import BoTSORT

    return BoTSORT


#: tracker_type -> factory of the tracker class (one table: CLI choices and YAML read it)
TRACKERS: Dict[str, Any] = {"bytetrack": lambda: ByteTracker, "botsort": _botsort}


def make_tracker(spec: Any = "bytetrack") -> ByteTracker:
    """A tracker from a name (``bytetrack``, ``botsort``), a YAML path, a mapping, a
    :class:`TrackerConfig` or a tracker object (returned as is)."""
    if isinstance(spec, ByteTracker):
        return spec
    cfg = load_config(spec)
    return TRACKERS[cfg.tracker_type]()(cfg)


class FrameTracks:
    """What tracking adds to one frame, for the sinks: ``trails`` {track id: (K, 2) float32 points,
    oldest first}, ``analytics`` (the :class:`Analytics` or None), ``counts`` (its dict at this frame)
    and ``events`` (line crossings and zone enters/exits of this frame)."""

    __slots__ = ("trails", "analytics", "counts", "events")

    def __init__(self, trails: Dict[int, np.ndarray], analytics: Optional[Analytics],
                 counts: Optional[Dict[str, Any]], events: List[Dict[str, Any]]) -> None:
        self.trails = trails
        self.analytics = analytics
        self.counts = counts
        self.events = events

    def record(self) -> Dict[str, Any]:
        """Fields for a frame's JSON record: ``analytics`` (counts) and ``events`` when lines or zones exist."""
        if self.counts is None:
            return {}
        return {"analytics": self.counts, "events": self.events}

    def counts_key(self) -> Tuple[Any, ...]:
        """Compact counts, for "send on change" comparisons."""
        if self.counts is None:
            return ()
        return (tuple((k, v["in"], v["out"]) for k, v in self.counts["lines"].items())
                + tuple((k, v["inside"], v["entered"]) for k, v in self.counts["zones"].items()))

    def draw(self, image: np.ndarray) -> np.ndarray:
        """Draw the lines and zones with their counts on ``image`` (BGR uint8, in place); returns it."""
        if self.analytics is None or self.counts is None:
            return image
        import cv2

        lw = max(round(sum(image.shape[:2]) / 2 * 0.003), 2)
        fs = lw / 3
        for line in self.analytics.lines:
            p1 = (int(round(line.p1[0])), int(round(line.p1[1])))
            p2 = (int(round(line.p2[0])), int(round(line.p2[1])))
            cv2.line(image, p1, p2, (255, 255, 255), lw + 2, cv2.LINE_AA)
            cv2.line(image, p1, p2, (0, 0, 255), lw, cv2.LINE_AA)
            c = self.counts["lines"][line.name]
            _label(image, f"{line.name}: in {c['in']} out {c['out']}", p1, fs, lw)
        for zone in self.analytics.zones:
            pts = np.round(zone.polygon).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(image, [pts], True, (0, 200, 255), lw, cv2.LINE_AA)
            c = self.counts["zones"][zone.name]
            x, y = int(pts[:, 0, 0].min()), int(pts[:, 0, 1].min())
            _label(image, f"{zone.name}: {c['inside']} inside", (x, y), fs, lw)
        return image


def _label(image: np.ndarray, text: str, at: Tuple[int, int], fs: float, lw: int) -> None:
    import cv2

    thick = max(lw - 1, 1)
    (tw, th), _ = cv2.getTextSize(text, 0, fs, thick)
    x = max(min(at[0], image.shape[1] - tw - 2), 0)
    y = max(at[1] - 4, th + 4)
    cv2.rectangle(image, (x, y - th - 4), (x + tw + 4, y + 2), (40, 40, 40), -1)
    cv2.putText(image, text, (x + 2, y - 2), 0, fs, (255, 255, 255), thick, cv2.LINE_AA)


class TrackingStage:
    """Tracker + trails + analytics, fed one Results per frame in capture order.

    - ``tracker``: anything :func:`make_tracker` takes;
    - ``analytics``: an :class:`Analytics` (count lines and zones) or None;
    - ``keep_conf``: detections scoring below it are kept only when they continue a track (None: keep all);
    - ``fps``: the source's frame rate (None: the tracker's ``frame_rate``); ``live``: step by
      capture timestamps instead of frame indices;
    - ``trail_length``: points kept per trail (0: no trails).
    """

    def __init__(self, tracker: Any = "bytetrack", analytics: Optional[Analytics] = None, *,
                 keep_conf: Optional[float] = None, fps: Optional[float] = None, live: bool = False,
                 trail_length: int = 30) -> None:
        self.tracker = make_tracker(tracker)
        self.analytics = analytics if analytics else None
        if keep_conf is not None and not 0.0 <= float(keep_conf) <= 1.0:
            raise InputError(f"keep_conf must be between 0 and 1, got {keep_conf!r}")
        self.keep_conf = keep_conf
        self.fps = float(fps) if fps and fps > 0 else self.tracker.config.frame_rate
        self.live = bool(live)
        if trail_length < 0:
            raise InputError(f"trail_length must be >= 0, got {trail_length}")
        self.trail_length = int(trail_length)
        self._trails: Dict[int, Deque[Tuple[float, float]]] = {}
        self._t0: Optional[float] = None
        self.frames = 0
        self.ms: List[float] = []

    @property
    def config(self) -> TrackerConfig:
        return self.tracker.config

    def clock(self, index: int, timestamp: Optional[float]) -> Tuple[float, float]:
        """(time in frames, time in seconds) of a frame: by index for files, by timestamp when live."""
        if self.live and timestamp is not None:
            if self._t0 is None:
                self._t0 = float(timestamp)
            seconds = float(timestamp) - self._t0
            return seconds * self.fps, seconds
        return float(index), float(index) / self.fps

    def __call__(self, res: Any, index: int, timestamp: Optional[float] = None) -> Tuple[Any, FrameTracks]:
        """Track one frame's Results -> (Results with ``track_ids``, :class:`FrameTracks`)."""
        t0 = _time.perf_counter()
        frames, seconds = self.clock(index, timestamp)
        ids = self.tracker.update(res.boxes, res.scores, res.class_ids, time=frames,
                                  image=getattr(res, "image", None))
        res = dataclasses.replace(res, track_ids=ids)  # checked like every Results field
        if self.keep_conf is not None:
            keep = (res.scores >= self.keep_conf) | (ids >= 0)
            if not keep.all():
                res = res[keep]
        alive = {t.id for t in self.tracker.tracks if t.confirmed and t.state in (TRACKED, LOST)}
        trails = self._update_trails(res, alive)
        counts, events = None, []
        if self.analytics is not None:
            events = self.analytics.update(res.track_ids, res.boxes, seconds, alive)
            counts = self.analytics.to_dict()
        self.frames += 1
        ms = (_time.perf_counter() - t0) * 1000.0
        self.ms.append(ms)
        res.speed["track"] = ms
        return res, FrameTracks(trails, self.analytics, counts, events)

    def _update_trails(self, res: Any, alive: set) -> Dict[int, np.ndarray]:
        if self.trail_length == 0:
            return {}
        b = res.boxes
        out: Dict[int, np.ndarray] = {}
        for t, (x0, y0, x1, y1) in zip(res.track_ids, b):
            if t < 0:
                continue
            trail = self._trails.setdefault(int(t), deque(maxlen=self.trail_length))
            trail.append((float(x0 + x1) / 2, float(y0 + y1) / 2))
            out[int(t)] = np.array(trail, np.float32)
        for t in [t for t in self._trails if t not in alive]:
            del self._trails[t]
        return out

    def summary(self) -> Dict[str, Any]:
        """Tracker name, ids handed out, ms per frame (median), and the final counts."""
        out: Dict[str, Any] = {"tracker": self.tracker.name, "tracks": self.tracker.next_id - 1, "frames": self.frames,
                               "ms_median": round(float(np.median(self.ms)), 3) if self.ms else None}
        if self.analytics is not None:
            out.update(self.analytics.to_dict())
        return out

    def summary_lines(self) -> List[str]:
        head = f"{self.tracker.name}: {self.tracker.next_id - 1} tracks over {self.frames} frames"
        return [head] + (self.analytics.summary_lines() if self.analytics is not None else [])


def pipeline_stage(runtime: Any, source: Any, tracker: Any = None,
                   analytics: Optional[Analytics] = None) -> Tuple[Optional[TrackingStage], Any]:
    """The tracking stage for a stream of ``runtime`` over ``source`` -> ``(stage or None, runtime)``.

    ``tracker``: None (no tracking, unless ``analytics`` asks for it: then ByteTrack), a name, a YAML
    path, a mapping, a :class:`TrackerConfig`, a tracker or a ready :class:`TrackingStage`.
    When the runtime's ``conf`` is above ``track_low_thresh``, the returned runtime is a view of the
    same loaded model decoding down to ``track_low_thresh`` (ByteTrack's second association needs the
    low-score boxes); ``conf`` then becomes the floor for starting tracks (``new_track_thresh`` and
    ``track_high_thresh`` are raised to it) and for showing detections that join no track.
    """
    if isinstance(tracker, TrackingStage):
        return tracker, runtime
    if tracker is None and not analytics:
        return None, runtime
    if analytics is not None and not isinstance(analytics, Analytics):
        raise InputError(f"analytics must be an edgeseg.live.tracking.Analytics, found {type(analytics).__name__}")
    if isinstance(tracker, ByteTracker):
        trk: Any = tracker
    else:
        trk = load_config("bytetrack" if tracker is None else tracker)
    keep_conf = None
    cfg = trk.config if isinstance(trk, ByteTracker) else trk
    conf = getattr(runtime, "conf", None)
    if isinstance(conf, (int, float)) and conf > cfg.track_low_thresh and callable(getattr(runtime, "with_options", None)):
        runtime = runtime.with_options(conf=cfg.track_low_thresh)
        keep_conf = float(conf)
        if not isinstance(trk, ByteTracker):
            trk = dataclasses.replace(cfg, track_high_thresh=max(cfg.track_high_thresh, keep_conf),
                                      new_track_thresh=max(cfg.new_track_thresh, keep_conf))
    stage = TrackingStage(trk, analytics, keep_conf=keep_conf, fps=getattr(source, "fps", None),
                          live=bool(getattr(source, "live", False)))
    return stage, runtime
