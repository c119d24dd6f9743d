"""Tracker settings: one dataclass, the defaults of each tracker, and YAML loading with checks.

A YAML file (``edgeseg run --track my.yaml``) names the tracker and overrides any setting::

    tracker_type: bytetrack      # or botsort
    track_high_thresh: 0.25      # first association: detections at or above this score
    track_low_thresh: 0.1        # second association (ByteTrack's low-score boxes): from here up
    new_track_thresh: 0.25       # an unmatched detection starts a track from this score
    match_thresh: 0.8            # largest association cost (1 - IoU, times the score when fuse_score)
    track_buffer: 30             # frames a lost track is kept (a live source counts elapsed time)
    class_aware: false           # true: a track only matches detections of its own class
    duplicate_iou: 0.8           # class-agnostic: a box overlapping a better one of another class
                                 # this much is the same object (only the better one is tracked)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

from ...errors import InputError

__all__ = ["TrackerConfig", "load_config", "TRACKER_TYPES"]

#: tracker name -> the defaults that differ from :class:`TrackerConfig`'s
TRACKER_TYPES: Dict[str, Dict[str, Any]] = {
    "bytetrack": {},
    "botsort": {"gmc_method": "sparseOptFlow", "kalman": "xywh"},
}

_GMC = ("none", "sparseOptFlow", "ecc")


@dataclass
class TrackerConfig:
    """Settings of :class:`~edgeseg.live.tracking.bytetrack.ByteTracker` and its BoT-SORT variant.

    Thresholds are detection scores (0-1) except ``match_thresh`` (a cost, 0-1). ``track_buffer``
    is in frames of the source; ``frame_rate`` turns seconds into frames where a source has no
    rate of its own (image folders, streams that do not report one).
    """

    tracker_type: str = "bytetrack"
    track_high_thresh: float = 0.25
    track_low_thresh: float = 0.1
    new_track_thresh: float = 0.25
    match_thresh: float = 0.8
    second_match_thresh: float = 0.5  # ByteTrack's second (low-score) association
    unconfirmed_match_thresh: float = 0.7  # tracks seen once, against the remaining detections
    track_buffer: int = 30
    class_aware: bool = False
    duplicate_iou: float = 0.8  # class-agnostic: boxes of other classes overlapping more are one object
    lost_penalty: float = 0.02  # association cost added per frame a track is lost (up to 5 frames)
    fuse_score: bool = True
    frame_rate: float = 30.0
    gmc_method: str = "none"  # BoT-SORT camera-motion compensation: none, sparseOptFlow, ecc
    gmc_downscale: int = 2
    kalman: str = "xyah"  # state of the Kalman filter: xyah (ByteTrack) or xywh (BoT-SORT)
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)  # unknown keys, kept for messages

    def __post_init__(self) -> None:
        if self.tracker_type not in TRACKER_TYPES:
            raise InputError(f"tracker_type must be one of {sorted(TRACKER_TYPES)}, got {self.tracker_type!r}")
        for name in ("track_high_thresh", "track_low_thresh", "new_track_thresh", "match_thresh",
                     "second_match_thresh", "unconfirmed_match_thresh", "duplicate_iou", "lost_penalty"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
                raise InputError(f"tracker {name} must be a number between 0 and 1, got {value!r}")
            setattr(self, name, float(value))
        if self.track_low_thresh > self.track_high_thresh:
            raise InputError(f"tracker track_low_thresh ({self.track_low_thresh}) must not exceed "
                             f"track_high_thresh ({self.track_high_thresh})")
        if isinstance(self.track_buffer, bool) or not isinstance(self.track_buffer, int) or self.track_buffer < 1:
            raise InputError(f"tracker track_buffer must be a whole number of frames >= 1, got {self.track_buffer!r}")
        for name in ("class_aware", "fuse_score"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"tracker {name} must be true or false, got {getattr(self, name)!r}")
        if isinstance(self.frame_rate, bool) or not isinstance(self.frame_rate, (int, float)) or not 0 < self.frame_rate <= 1000:
            raise InputError(f"tracker frame_rate must be a number of frames per second in (0, 1000], got {self.frame_rate!r}")
        self.frame_rate = float(self.frame_rate)
        if self.gmc_method not in _GMC:
            raise InputError(f"tracker gmc_method must be one of {list(_GMC)}, got {self.gmc_method!r}")
        if not isinstance(self.gmc_downscale, int) or isinstance(self.gmc_downscale, bool) or not 1 <= self.gmc_downscale <= 16:
            raise InputError(f"tracker gmc_downscale must be an integer in 1-16, got {self.gmc_downscale!r}")
        if self.kalman not in ("xyah", "xywh"):
            raise InputError(f"tracker kalman must be 'xyah' or 'xywh', got {self.kalman!r}")

    @classmethod
    def named(cls, name: str, **overrides: Any) -> "TrackerConfig":
        """The defaults of tracker ``name`` (``bytetrack``, ``botsort``) with ``overrides``."""
        if name not in TRACKER_TYPES:
            raise InputError(f"unknown tracker {name!r}: expected one of {sorted(TRACKER_TYPES)} or a .yaml file")
        return cls.from_dict({"tracker_type": name, **overrides})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "tracker settings") -> "TrackerConfig":
        """Build from a mapping; unknown keys are an error that lists the known ones. Ultralytics'
        tracker YAML keys that mean the same (``with_reid`` false, ``proximity_thresh`` ...) are accepted
        and ignored when they ask for nothing edgeseg lacks."""
        if not isinstance(data, Mapping):
            raise InputError(f"{source}: expected a mapping of settings, found {type(data).__name__}")
        data = dict(data)
        name = data.get("tracker_type", "bytetrack")
        if name not in TRACKER_TYPES:
            raise InputError(f"{source}: tracker_type must be one of {sorted(TRACKER_TYPES)}, got {name!r}")
        if data.get("with_reid"):
            raise InputError(f"{source}: with_reid is not supported (edgeseg's BoT-SORT has no re-identification "
                             f"model); set with_reid: false")
        if "gmc_method" in data and data["gmc_method"] in (None, "None"):  # Ultralytics' `gmc_method: None`
            data["gmc_method"] = "none"
        ignored = {k: data.pop(k) for k in ("with_reid", "proximity_thresh", "appearance_thresh", "model")
                   if k in data}
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"{source}: unknown tracker settings {unknown}; expected some of {sorted(known)}")
        merged = {**TRACKER_TYPES[name], **data, "tracker_type": name}
        try:
            return cls(**merged, extra=ignored)
        except TypeError as exc:  # pragma: no cover - every key is checked above
            raise InputError(f"{source}: {exc}") from exc

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("extra")
        return d


def load_config(spec: Union[None, str, Path, Mapping[str, Any], TrackerConfig]) -> TrackerConfig:
    """``"bytetrack"`` / ``"botsort"`` / a YAML file path / a mapping / a config -> :class:`TrackerConfig`."""
    if isinstance(spec, TrackerConfig):
        return spec
    if spec is None:
        return TrackerConfig()
    if isinstance(spec, Mapping):
        return TrackerConfig.from_dict(spec)
    text = str(spec)
    if text in TRACKER_TYPES:
        return TrackerConfig.named(text)
    path = Path(text)
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise InputError(f"--track {text!r}: expected bytetrack, botsort or a .yaml file")
    if not path.is_file():
        raise InputError(f"--track {text}: tracker settings file not found")
    import yaml

    try:
        data: Optional[Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(f"--track {path}: not a readable YAML file: {exc}") from exc
    return TrackerConfig.from_dict(data or {}, source=f"--track {path}")
