"""Line crossings and zone occupancy from tracked objects.

Coordinates are source-image pixels; an object's position is its box centre (``anchor="center"``) or
the middle of its bottom edge (``anchor="bottom"``, where people stand).

- :class:`CountLine` ``x1,y1,x2,y2``: counts objects whose path crosses the segment. Walking from
  (x1, y1) to (x2, y2), crossing from your left to your right is ``in``, the other way ``out``; on
  screen (y grows downwards), a line drawn left to right counts objects moving *down* as ``in``.
  A point closer to the line than a tolerance (5 % of the object's smaller box side, at least 2 px)
  keeps its previous side (jitter on the line counts nothing), and a track's counted crossings of
  one line alternate (in, out, in...), so a box wobbling across the line counts at most once each way.
- :class:`Zone` ``x1,y1,x2,y2,x3,y3,...``: a polygon. An object is inside from the first frame its
  position is in the polygon until it is seen outside by more than the same tolerance, or its track
  ends (a brief occlusion does not empty the zone; an object that leaves the image counts as inside
  until its track expires after ``track_buffer`` frames). ``dwell_s`` runs from entering to the last
  frame it was seen inside; objects that left add to ``exited`` and to the mean dwell.

Specs on the command line: ``[name=]x1,y1,x2,y2`` (``--count-line``) and ``[name=]x1,y1,...``
(``--zone``, at least 3 points); unnamed ones are ``line1``, ``zone1``...
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import numpy as np

from ...errors import InputError

__all__ = ["CountLine", "Zone", "Analytics", "parse_line", "parse_zone", "ANCHORS"]

ANCHORS = ("center", "bottom")


def _parse_spec(spec: str, kind: str, option: str) -> Tuple[Optional[str], List[float]]:
    text = str(spec).strip()
    name: Optional[str] = None
    if "=" in text:
        name, text = (p.strip() for p in text.split("=", 1))
        if not name or not all(c.isalnum() or c in "-_." for c in name):
            raise InputError(f"{option} {spec!r}: a name may use letters, digits, - _ . only (name=x1,y1,...)")
    try:
        vals = [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{option} {spec!r}: expected [name=]{kind} as comma-separated pixel coordinates") from None
    if not all(np.isfinite(vals)):
        raise InputError(f"{option} {spec!r}: coordinates must be finite numbers")
    return name, vals


@dataclass
class CountLine:
    """A counting line from ``p1`` to ``p2`` (source pixels); ``counts`` holds ``in`` and ``out``."""

    name: str
    p1: Tuple[float, float]
    p2: Tuple[float, float]
    counts: Dict[str, int] = field(default_factory=lambda: {"in": 0, "out": 0})

    def __post_init__(self) -> None:
        self.p1 = (float(self.p1[0]), float(self.p1[1]))
        self.p2 = (float(self.p2[0]), float(self.p2[1]))
        if self.p1 == self.p2:
            raise InputError(f"count line {self.name!r}: the two end points are the same ({self.p1})")
        self._side: Dict[int, Tuple[int, Tuple[float, float]]] = {}  # track -> (side, point on that side)
        self._last: Dict[int, str] = {}  # track -> last counted direction

    def side(self, p: Tuple[float, float], tol: float = 0.0) -> int:
        """+1 right of p1->p2 (on screen), -1 left, 0 within ``tol`` pixels of the infinite line."""
        (x1, y1), (x2, y2) = self.p1, self.p2
        dx, dy = x2 - x1, y2 - y1
        cross = dx * (p[1] - y1) - dy * (p[0] - x1)
        dist = cross / float(np.hypot(dx, dy))
        return 0 if abs(dist) <= tol else (1 if dist > 0 else -1)

    def _within(self, a: Tuple[float, float], b: Tuple[float, float]) -> bool:
        """Whether the segment a->b (which changes side) meets the line segment p1->p2."""
        (x1, y1), (x2, y2) = self.p1, self.p2
        d1 = (b[0] - a[0]) * (y1 - a[1]) - (b[1] - a[1]) * (x1 - a[0])
        d2 = (b[0] - a[0]) * (y2 - a[1]) - (b[1] - a[1]) * (x2 - a[0])
        return d1 * d2 <= 0

    def update(self, track_id: int, point: Tuple[float, float], tol: float = 2.0) -> Optional[str]:
        """Feed one object position; returns ``"in"``/``"out"`` when this step counted a crossing."""
        s = self.side(point, tol)
        if s == 0:
            return None
        prev = self._side.get(track_id)
        self._side[track_id] = (s, point)
        if prev is None or prev[0] == s or not self._within(prev[1], point):
            return None
        direction = "in" if s > 0 else "out"
        if self._last.get(track_id) == direction:
            return None
        self._last[track_id] = direction
        self.counts[direction] += 1
        return direction

    def forget(self, track_ids: Iterable[int]) -> None:
        for t in track_ids:
            self._side.pop(t, None)
            self._last.pop(t, None)

    def to_dict(self) -> Dict[str, Any]:
        return {"in": self.counts["in"], "out": self.counts["out"]}


@dataclass
class Zone:
    """A polygon zone (K, 2) source pixels; objects inside, entries, exits, dwell times (seconds)."""

    name: str
    polygon: np.ndarray
    entered: int = 0
    exited: int = 0
    dwell_total: float = 0.0

    def __post_init__(self) -> None:
        self.polygon = np.asarray(self.polygon, np.float64).reshape(-1, 2)
        if len(self.polygon) < 3:
            raise InputError(f"zone {self.name!r}: expected at least 3 points, found {len(self.polygon)}")
        x, y = self.polygon[:, 0], self.polygon[:, 1]
        if abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))) < 1e-9:
            raise InputError(f"zone {self.name!r}: the polygon has no area (its points are on one line)")
        self.members: Dict[int, Tuple[float, float]] = {}  # track -> (entered at, last seen inside)

    def contains(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) points -> (N,) bool, inside the polygon (even-odd rule)."""
        p = np.asarray(points, np.float64).reshape(-1, 2)
        px, py = p[:, 0:1], p[:, 1:2]
        a, b = self.polygon, np.roll(self.polygon, -1, axis=0)
        ax, ay, bx, by = a[:, 0], a[:, 1], b[:, 0], b[:, 1]
        crosses = (ay > py) != (by > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            xint = ax + (py - ay) * (bx - ax) / (by - ay)
        return (crosses & (px < xint)).sum(axis=1) % 2 == 1

    def distance(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) points -> (N,) distance in pixels to the polygon's outline."""
        p = np.asarray(points, np.float64).reshape(-1, 1, 2)
        a, b = self.polygon[None], np.roll(self.polygon, -1, axis=0)[None]
        ab = b - a
        t = np.clip(((p - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0.0, 1.0)
        near = a + t[..., None] * ab
        return np.sqrt(((p - near) ** 2).sum(-1)).min(axis=1)

    def update(self, ids: Sequence[int], points: np.ndarray, tol: np.ndarray, now: float) -> List[Dict[str, Any]]:
        """Feed this frame's observed tracks (ids, (N, 2) positions, (N,) tolerances in pixels);
        returns enter/exit events."""
        events: List[Dict[str, Any]] = []
        inside = self.contains(points)
        far = self.distance(points) > tol
        for t, ins, f in zip(ids, inside, far):
            if ins:
                if t not in self.members:
                    self.members[t] = (now, now)
                    self.entered += 1
                    events.append({"type": "zone", "name": self.name, "event": "enter", "track_id": int(t)})
                else:
                    self.members[t] = (self.members[t][0], now)
            elif t in self.members and f:
                events.append(self._exit(t, self.members[t][1]))
        return events

    def _exit(self, t: int, at: float) -> Dict[str, Any]:
        since, _ = self.members.pop(t)
        dwell = max(at - since, 0.0)
        self.exited += 1
        self.dwell_total += dwell
        return {"type": "zone", "name": self.name, "event": "exit", "track_id": int(t), "dwell_s": round(dwell, 3)}

    def expire(self, alive: Set[int]) -> List[Dict[str, Any]]:
        """Tracks that ended leave the zone at the time they were last seen inside."""
        gone = [t for t in self.members if t not in alive]
        return [self._exit(t, self.members[t][1]) for t in gone]

    def to_dict(self) -> Dict[str, Any]:
        return {
            "inside": len(self.members),
            "entered": self.entered,
            "exited": self.exited,
            "objects": [{"track_id": int(t), "dwell_s": round(last - since, 3)}
                        for t, (since, last) in sorted(self.members.items())],
            "mean_dwell_s": round(self.dwell_total / self.exited, 3) if self.exited else None,
        }


def parse_line(spec: str, index: int = 1) -> CountLine:
    """``[name=]x1,y1,x2,y2`` -> :class:`CountLine` (named ``line<index>`` without a name)."""
    name, vals = _parse_spec(spec, "x1,y1,x2,y2", "--count-line")
    if len(vals) != 4:
        raise InputError(f"--count-line {spec!r}: expected 4 numbers x1,y1,x2,y2, found {len(vals)}")
    return CountLine(name or f"line{index}", (vals[0], vals[1]), (vals[2], vals[3]))


def parse_zone(spec: str, index: int = 1) -> Zone:
    """``[name=]x1,y1,x2,y2,x3,y3,...`` -> :class:`Zone` (named ``zone<index>`` without a name)."""
    name, vals = _parse_spec(spec, "x1,y1,x2,y2,x3,y3,...", "--zone")
    if len(vals) < 6 or len(vals) % 2:
        raise InputError(f"--zone {spec!r}: expected an even count of at least 6 numbers (3+ points x,y), found {len(vals)}")
    return Zone(name or f"zone{index}", np.array(vals).reshape(-1, 2))


class Analytics:
    """Count lines and zones fed by tracked objects (see the module docstring).

    :meth:`update` takes one frame's confirmed track ids, their boxes and the frame time (seconds),
    and the ids of all tracks still alive in the tracker (lost ones included)."""

    def __init__(self, lines: Sequence[CountLine] = (), zones: Sequence[Zone] = (), anchor: str = "center") -> None:
        if anchor not in ANCHORS:
            raise InputError(f"anchor must be one of {list(ANCHORS)}, got {anchor!r}")
        names = [x.name for x in list(lines) + list(zones)]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise InputError(f"count lines and zones need distinct names; {dup} used more than once")
        self.lines = list(lines)
        self.zones = list(zones)
        self.anchor = anchor
        self.now = 0.0

    @classmethod
    def from_specs(cls, lines: Sequence[str] = (), zones: Sequence[str] = (), anchor: str = "center") -> "Analytics":
        return cls([parse_line(s, i + 1) for i, s in enumerate(lines)],
                   [parse_zone(s, i + 1) for i, s in enumerate(zones)], anchor=anchor)

    def __bool__(self) -> bool:
        return bool(self.lines or self.zones)

    def points(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) xyxy -> (N, 2) anchor points."""
        b = np.asarray(boxes, np.float64).reshape(-1, 4)
        y = b[:, 3] if self.anchor == "bottom" else (b[:, 1] + b[:, 3]) / 2
        return np.stack([(b[:, 0] + b[:, 2]) / 2, y], axis=1)

    def update(self, track_ids: np.ndarray, boxes: np.ndarray, now: float, alive: Set[int]) -> List[Dict[str, Any]]:
        """One frame -> this frame's events (line crossings, zone enters/exits)."""
        self.now = float(now)
        keep = np.asarray(track_ids) >= 0
        ids = [int(t) for t in np.asarray(track_ids)[keep]]
        b = np.asarray(boxes, np.float64).reshape(-1, 4)[keep]
        pts = self.points(b)
        tol = np.maximum(2.0, 0.05 * np.minimum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]))
        events: List[Dict[str, Any]] = []
        for line in self.lines:
            for t, p, tl in zip(ids, pts, tol):
                d = line.update(t, (float(p[0]), float(p[1])), float(tl))
                if d is not None:
                    events.append({"type": "line", "name": line.name, "direction": d, "track_id": t})
            line.forget([t for t in list(line._side) if t not in alive])
        for zone in self.zones:
            events += zone.update(ids, pts, tol, self.now)
            events += zone.expire(alive)
        return events

    def to_dict(self) -> Dict[str, Any]:
        """``{"lines": {name: {"in", "out"}}, "zones": {name: {"inside", "entered", "exited", "objects",
        "mean_dwell_s"}}}``."""
        return {"lines": {x.name: x.to_dict() for x in self.lines},
                "zones": {z.name: z.to_dict() for z in self.zones}}

    def counts_key(self) -> Tuple[Any, ...]:
        """The counts only (what ``--mqtt-on-change`` compares)."""
        return (tuple((x.name, x.counts["in"], x.counts["out"]) for x in self.lines)
                + tuple((z.name, len(z.members), z.entered) for z in self.zones))

    def summary_lines(self) -> List[str]:
        out = [f"line {x.name}: {x.counts['in']} in, {x.counts['out']} out" for x in self.lines]
        for z in self.zones:
            mean = f", mean dwell {z.dwell_total / z.exited:.1f}s" if z.exited else ""
            out.append(f"zone {z.name}: {len(z.members)} inside now, {z.entered} entered, {z.exited} left{mean}")
        return out
