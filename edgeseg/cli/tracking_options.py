"""``edgeseg run`` options for tracking and analytics (``--track``, ``--count-line``, ``--zone``)."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["tracking_options", "tracking_kwargs", "tracking_summary_lines"]


def tracking_options(func: F) -> F:
    """Add the tracking options to a command (they arrive as ``track``, ``count_line``, ``zone``,
    ``track_anchor``; :func:`tracking_kwargs` turns them into ``stream()`` arguments)."""
    opts = [
        click.option("--track", default=None, is_flag=False, flag_value="bytetrack",
                     metavar="[bytetrack|botsort|PATH.yaml]",
                     help="Track objects: every detection gets a stable track_id (JSON, MQTT, preview, "
                          "drawn with a trail). --track alone is ByteTrack; botsort adds camera-motion "
                          "compensation; a YAML file sets track_high_thresh, track_low_thresh, "
                          "new_track_thresh, match_thresh, track_buffer, class_aware..."),
        click.option("--count-line", "count_line", multiple=True, metavar="[NAME=]X1,Y1,X2,Y2",
                     help="Count tracked objects crossing this line (source pixels), in and out by direction: "
                          "a line drawn left to right counts objects moving down as in. Repeatable; implies --track."),
        click.option("--zone", multiple=True, metavar="[NAME=]X1,Y1,X2,Y2,X3,Y3,...",
                     help="Polygon zone (source pixels): objects inside, entries, dwell time. Repeatable; implies --track."),
        click.option("--track-anchor", type=click.Choice(["center", "bottom"]), default="center", show_default=True,
                     help="Point of a box that --count-line and --zone use (bottom: the middle of its bottom edge)."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


def tracking_kwargs(kw: Dict[str, Any]) -> Dict[str, Any]:
    """Pop the tracking options from a command's kwargs -> ``{"tracker": ..., "analytics": ...}`` for
    :func:`edgeseg.live.pipeline.stream` (empty when tracking is off). Bad specs raise InputError."""
    track, lines, zones, anchor = kw.pop("track"), kw.pop("count_line"), kw.pop("zone"), kw.pop("track_anchor")
    if track is None and not lines and not zones:
        return {}
    from ..live.tracking import Analytics, load_config

    config = load_config(track or "bytetrack")  # checks the name / YAML file before the model loads
    analytics = Analytics.from_specs(lines, zones, anchor=anchor) if (lines or zones) else None
    return {"tracker": config, "analytics": analytics}


def tracking_summary_lines(stream: Any) -> List[str]:
    """The end-of-run lines about tracking (tracks, line and zone counts); none without tracking."""
    stage = getattr(stream, "tracking", None)
    return stage.summary_lines() if stage is not None else []
