"""``--save``: picks the sink from the target's name: a video file, one image file (a single image
input), or a folder of annotated images."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Union

from ...errors import InputError
from ...io import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from .base import SinkContext, SinkOption, SinkSpec, Sink, register
from .frames import FramesSink, ImageSink
from .video import FOURCC, VideoSink

__all__ = ["save_sink"]


def save_sink(target: Union[str, Path], fps: Optional[float] = None, *, single_image: bool = False,
              videos: str = "frames") -> Sink:
    """``--save``: a :class:`VideoSink` for a video file name, an :class:`ImageSink` for an image
    file name when the input is a single image, else a :class:`FramesSink` folder (``videos``:
    ``"frames"`` writes video frames as JPEGs, ``"video"`` as one annotated .mp4 per video)."""
    p = Path(target)
    suffix = p.suffix.lower()
    if p.is_dir():
        return FramesSink(p, videos=videos)
    if suffix in FOURCC:
        return VideoSink(p, fps=fps)
    if suffix in IMAGE_SUFFIXES and single_image:
        return ImageSink(p)
    if suffix in IMAGE_SUFFIXES or suffix in VIDEO_SUFFIXES:
        raise InputError(f"--save {p}: expected a video file ({', '.join(FOURCC)}) or a folder"
                         + (", or an image file name when the input is a single image" if suffix in IMAGE_SUFFIXES
                            else "") + f"; found suffix {suffix}")
    return FramesSink(p, videos=videos)


def _build(opts: Dict[str, Any], ctx: SinkContext) -> Optional[Sink]:
    if not opts.get("save"):
        return None
    videos = "video" if ctx.command == "predict" else "frames"
    return save_sink(opts["save"], fps=opts.get("save_fps"), single_image=ctx.single_image, videos=videos)


register(SinkSpec(
    name="save",
    order=10,
    options=(
        SinkOption("--save", "save", metavar={"run": "OUT.mp4|DIR", "predict": "DIR|OUT.jpg"}, help={
            "run": "Save annotated frames: a video file (.mp4/.avi/.mkv), a folder of JPEGs, or an image file "
                   "for a single image input.",
            "predict": "Folder for annotated images (each video as DIR/<name>.mp4); an image file name "
                       "(out.jpg) for a single image input, a video file name for one video.",
        }),
        SinkOption("--save-fps", "save_fps", type=float,
                   help="Frame rate of the saved video (default: the source's)."),
    ),
    build=_build,
))
