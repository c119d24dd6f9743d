"""ByteTrack (Zhang et al., 2022) in numpy, stepping by elapsed time; BoT-SORT's camera-motion
compensation plugs in (see :mod:`edgeseg.live.tracking.botsort`).

Each :meth:`ByteTracker.update` takes one frame's detections and returns one track id per detection
(-1 for a detection that belongs to no confirmed track). Per frame:

1. every track's Kalman state is predicted ``dt`` frames ahead (and warped by the camera motion);
2. confirmed and lost tracks are matched to the detections scoring ``>= track_high_thresh`` (cost
   ``1 - IoU x score`` with ``fuse_score``, else ``1 - IoU``; at most ``match_thresh``); a track
   lost for k frames pays ``lost_penalty x min(k, 5)`` more, so when a lost and a tracked track fit a
   detection about equally, the one seen last frame wins (a soft form of DeepSORT's matching cascade);
   detections of another class overlapping a better one by ``duplicate_iou`` are left out (per-class
   NMS can report one object as two classes);
3. tracks still unmatched and seen last frame are matched to the low-score detections
   (``track_low_thresh`` to ``track_high_thresh``; cost ``1 - IoU`` at most ``second_match_thresh``):
   occluded objects whose score dropped keep their id;
4. tracks seen once (unconfirmed) are matched to the remaining high-score detections and confirmed,
   or dropped;
5. remaining detections from ``new_track_thresh`` start unconfirmed tracks; tracks lost for more
   than ``track_buffer`` frames are removed.

Ids are handed out when a track is confirmed (seen on two frames), so they count real objects: 1, 2, 3...
The tracker is deterministic: the same detections and times give the same ids.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from ...errors import InputError
from .assignment import iou_matrix, linear_assignment
from .config import TrackerConfig
from .kalman import KalmanBoxFilter, state_to_xyxy, xyxy_to_state

__all__ = ["ByteTracker", "Track"]

NEW, TRACKED, LOST, REMOVED = 0, 1, 2, 3


class Track:
    """One tracked object: Kalman state, last score and class, and bookkeeping (times in frames)."""

    __slots__ = ("id", "mean", "cov", "score", "class_id", "state", "confirmed", "start", "last_seen", "hits")

    def __init__(self, mean: np.ndarray, cov: np.ndarray, score: float, class_id: int, now: float) -> None:
        self.id = 0  # public id, given on confirmation
        self.mean, self.cov = mean, cov
        self.score, self.class_id = score, class_id
        self.state = NEW
        self.confirmed = False
        self.start = self.last_seen = now
        self.hits = 1

    def __repr__(self) -> str:
        return f"Track(id={self.id}, state={('new', 'tracked', 'lost', 'removed')[self.state]}, class={self.class_id})"


class ByteTracker:
    """ByteTrack over detections in source pixels. ``config``: a :class:`TrackerConfig` (defaults:
    ByteTrack's). :meth:`update` once per frame, in time order."""

    name = "bytetrack"

    def __init__(self, config: Optional[TrackerConfig] = None) -> None:
        self.config = config or TrackerConfig.named(self.name)
        self.kf = KalmanBoxFilter(self.config.kalman)
        self.tracks: List[Track] = []  # new, tracked and lost tracks
        self.frame_count = 0
        self.next_id = 1
        self._now: Optional[float] = None

    def reset(self) -> None:
        self.tracks = []
        self.frame_count = 0
        self.next_id = 1
        self._now = None

    # -- camera motion (BoT-SORT) ---------------------------------------------------------------
    def camera_motion(self, image: Optional[np.ndarray], boxes: np.ndarray) -> Optional[np.ndarray]:
        """2x3 affine from the previous frame to this one, or None (ByteTrack: no compensation)."""
        return None

    # -- the update -----------------------------------------------------------------------------
    def update(self, boxes: np.ndarray, scores: np.ndarray, class_ids: Optional[np.ndarray] = None,
               time: Optional[float] = None, image: Optional[np.ndarray] = None) -> np.ndarray:
        """One frame: ``boxes`` (N, 4) xyxy source pixels, ``scores`` (N,), ``class_ids`` (N,);
        ``time``: this frame's time in frames of the source (frame index for files; elapsed seconds x
        frame rate for live sources; None: one more than the last). ``image``: the BGR frame, used
        only for camera-motion compensation. Returns (N,) int64 track ids, -1 where none is confirmed."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64).reshape(-1)
        n = len(boxes)
        classes = np.zeros(n, np.int64) if class_ids is None else np.asarray(class_ids, np.int64).reshape(-1)
        if len(scores) != n or len(classes) != n:
            raise InputError(f"tracker update: expected one score and class per box; found {n} boxes, "
                             f"{len(scores)} scores, {len(classes)} class ids")
        now = (self._now + 1.0 if self._now is not None else 0.0) if time is None else float(time)
        if self._now is not None and now < self._now:
            raise InputError(f"tracker update: frame time went backwards ({now} after {self._now}); "
                             f"feed frames in time order or call reset()")
        dt = 1.0 if self._now is None else now - self._now
        self._now = now
        self.frame_count += 1
        cfg = self.config
        ids = np.full(n, -1, np.int64)

        self._predict(dt)
        affine = self.camera_motion(image, boxes)
        if affine is not None and self.tracks:
            mean, cov = self.kf.warp(*self._stack(self.tracks), affine)
            self._unstack(self.tracks, mean, cov)

        usable = self._distinct(boxes, scores, classes)
        high = np.nonzero(usable & (scores >= cfg.track_high_thresh))[0]
        low = np.nonzero(usable & (scores >= cfg.track_low_thresh) & (scores < cfg.track_high_thresh))[0]
        unconfirmed = [t for t in self.tracks if t.state == TRACKED and not t.confirmed]
        pool = [t for t in self.tracks if t.confirmed and t.state in (TRACKED, LOST)]

        # 1st association: confirmed + lost tracks x high-score detections
        m, um_t, um_d = self._match(pool, boxes, scores, classes, high, cfg.match_thresh, cfg.fuse_score)
        self._apply(pool, m, high, boxes, scores, classes, now, ids)
        # 2nd association: tracks seen last frame x low-score detections (IoU only)
        rest = [pool[i] for i in um_t if pool[i].state == TRACKED]
        m2, um_t2, _ = self._match(rest, boxes, scores, classes, low, cfg.second_match_thresh, False)
        self._apply(rest, m2, low, boxes, scores, classes, now, ids)
        for i in um_t2:
            rest[i].state = LOST
        # unconfirmed tracks x the high-score detections left
        left = high[um_d]
        m3, um_u, um_d3 = self._match(unconfirmed, boxes, scores, classes, left, cfg.unconfirmed_match_thresh,
                                      cfg.fuse_score)
        self._apply(unconfirmed, m3, left, boxes, scores, classes, now, ids)
        for i in um_u:
            unconfirmed[i].state = REMOVED
        # new tracks
        starts = [d for d in left[um_d3] if scores[d] >= cfg.new_track_thresh]
        if starts:
            sel = np.array(starts, np.int64)
            mean, cov = self.kf.initiate(xyxy_to_state(boxes[sel], self.kf.mode))
            first = self.frame_count == 1
            for k, d in enumerate(sel):
                t = Track(mean[k], cov[k], float(scores[d]), int(classes[d]), now)
                t.state = TRACKED
                if first:  # as ByteTrack: tracks of the first frame are confirmed at once
                    self._confirm(t)
                    ids[d] = t.id
                self.tracks.append(t)
        # expire lost tracks, drop removed ones, resolve duplicates
        for t in self.tracks:
            if t.state == LOST and now - t.last_seen > cfg.track_buffer:
                t.state = REMOVED
        self.tracks = [t for t in self.tracks if t.state != REMOVED]
        self._remove_duplicates()
        return ids

    # -- helpers --------------------------------------------------------------------------------
    def _distinct(self, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """(N,) bool: detections the tracker uses. Per-class NMS leaves one object detected as two
        classes with near-identical boxes; a class-agnostic tracker would start a second track on the
        weaker one, so it only tracks the better-scored box (``duplicate_iou``)."""
        n = len(boxes)
        keep = np.ones(n, bool)
        if self.config.class_aware or n < 2 or self.config.duplicate_iou >= 1.0:
            return keep
        iou = iou_matrix(boxes, boxes)
        dup = (iou > self.config.duplicate_iou) & (classes[:, None] != classes[None, :])
        if not dup.any():
            return keep
        for i in np.argsort(-scores, kind="stable"):
            if keep[i]:
                keep[dup[i] & (scores <= scores[i]) & (np.arange(n) != i)] = False
        return keep

    def _confirm(self, t: Track) -> None:
        t.confirmed = True
        t.id = self.next_id
        self.next_id += 1

    def _stack(self, tracks: List[Track]) -> tuple:
        return np.array([t.mean for t in tracks]), np.array([t.cov for t in tracks])

    @staticmethod
    def _unstack(tracks: List[Track], mean: np.ndarray, cov: np.ndarray) -> None:
        for k, t in enumerate(tracks):
            t.mean, t.cov = mean[k], cov[k]

    def _predict(self, dt: float) -> None:
        if not self.tracks or dt <= 0:
            return
        mean, cov = self._stack(self.tracks)
        not_tracked = np.array([t.state != TRACKED for t in self.tracks])
        mean[not_tracked, 7] = 0.0  # as ByteTrack: a lost track's size stops changing
        mean, cov = self.kf.predict(mean, cov, dt)
        self._unstack(self.tracks, mean, cov)

    def _match(self, tracks: List[Track], boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray,
               dets: np.ndarray, thresh: float, fuse: bool) -> tuple:
        if not tracks or len(dets) == 0:
            return np.zeros((0, 2), np.int64), np.arange(len(tracks)), np.arange(len(dets))
        tb = state_to_xyxy(np.array([t.mean for t in tracks]), self.kf.mode)
        sim = iou_matrix(tb, boxes[dets])
        if fuse:
            sim = sim * scores[dets][None, :]
        cost = 1.0 - sim
        if self.config.lost_penalty > 0 and self._now is not None:
            age = np.minimum([self._now - t.last_seen for t in tracks], 5.0)  # frames since last matched
            cost = cost + self.config.lost_penalty * age[:, None]
        if self.config.class_aware:
            tc = np.array([t.class_id for t in tracks])
            cost[tc[:, None] != classes[dets][None, :]] = np.inf
        return linear_assignment(cost, thresh)

    def _apply(self, tracks: List[Track], matches: np.ndarray, dets: np.ndarray, boxes: np.ndarray,
               scores: np.ndarray, classes: np.ndarray, now: float, ids: np.ndarray) -> None:
        if len(matches) == 0:
            return
        sel = [tracks[i] for i in matches[:, 0]]
        d = dets[matches[:, 1]]
        mean, cov = self.kf.update(*self._stack(sel), xyxy_to_state(boxes[d], self.kf.mode))
        self._unstack(sel, mean, cov)
        for t, di in zip(sel, d):
            t.state = TRACKED
            t.score, t.class_id = float(scores[di]), int(classes[di])
            t.last_seen = now
            t.hits += 1
            if not t.confirmed:
                self._confirm(t)
            ids[di] = t.id

    def _remove_duplicates(self) -> None:
        """A lost track overlapping a tracked one (IoU > 0.85) duplicates it: the lost one goes (the
        tracked one's id is already in this frame's output)."""
        tracked = [t for t in self.tracks if t.state == TRACKED and t.confirmed]
        lost = [t for t in self.tracks if t.state == LOST]
        if not tracked or not lost:
            return
        iou = iou_matrix(state_to_xyxy(self._stack(tracked)[0], self.kf.mode),
                         state_to_xyxy(self._stack(lost)[0], self.kf.mode))
        drop = {id(lost[j]) for j in np.nonzero((iou > 0.85).any(axis=0))[0]}
        if drop:
            self.tracks = [t for t in self.tracks if id(t) not in drop]

    # -- views ----------------------------------------------------------------------------------
    def active(self) -> List[Track]:
        """Confirmed tracks matched on the last frame."""
        return [t for t in self.tracks if t.confirmed and t.state == TRACKED and t.last_seen == self._now]

    def describe(self) -> Dict[str, Any]:
        return {"tracker": self.name, "tracks": self.next_id - 1, "active": len(self.active()),
                "lost": sum(t.state == LOST for t in self.tracks), **self.config.to_dict()}
