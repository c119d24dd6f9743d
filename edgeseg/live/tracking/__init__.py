"""Multi-object tracking for the live path: ByteTrack (default) and BoT-SORT, in numpy (+ OpenCV for
BoT-SORT's camera-motion compensation), with line and zone analytics.

    >>> from edgeseg import Runtime
    >>> with Runtime("yolov8n-seg.onnx") as rt:
    ...     for res in rt.stream("clip.mp4", tracker="bytetrack"):
    ...         print(res.track_ids)          # one id per detection, -1 while unconfirmed

Or frame by frame with any detections::

    >>> tracker = make_tracker("bytetrack")   # or "botsort", a YAML file, a TrackerConfig
    >>> ids = tracker.update(boxes_xyxy, scores, class_ids, time=frame_index)

Modules: :mod:`.config` (settings, YAML), :mod:`.kalman`, :mod:`.assignment`, :mod:`.bytetrack`,
:mod:`.botsort`, :mod:`.analytics` (count lines, zones), :mod:`.stage` (the pipeline hook).
"""
from __future__ import annotations

from .analytics import Analytics, CountLine, Zone, parse_line, parse_zone
from .bytetrack import ByteTracker
from .config import TRACKER_TYPES, TrackerConfig, load_config
from .stage import TRACKERS, FrameTracks, TrackingStage, make_tracker

__all__ = [
    "Analytics",
    "ByteTracker",
    "CountLine",
    "FrameTracks",
    "TRACKERS",
    "TRACKER_TYPES",
    "TrackerConfig",
    "TrackingStage",
    "Zone",
    "load_config",
    "make_tracker",
    "parse_line",
    "parse_zone",
]
