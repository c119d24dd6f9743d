"""Annotated frames as image files: a folder of them (``--save DIR``) or one file (``--save out.jpg``
for a single image). The ``--save`` option itself is in :mod:`.save`."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Union

from ...errors import InputError
from ...io import IMAGE_SUFFIXES, VIDEO_SUFFIXES, AtomicFile, make_dirs, remove_stale_temps
from .base import Packet, Sink
from .video import VideoSink

__all__ = ["FramesSink", "ImageSink"]


def _encode(img: object, suffix: str, quality: int, what: str) -> bytes:
    import cv2

    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if suffix in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(suffix, img, params)
    if not ok:  # pragma: no cover - encoding a valid BGR image does not fail
        raise InputError(f"{what}: OpenCV cannot encode the annotated frame as {suffix}")
    return buf.tobytes()


class FramesSink(Sink):
    """One annotated JPEG per frame in ``folder``: ``<image stem>.jpg`` for image files,
    ``<video stem>_<index>.jpg`` for video frames, ``frame_<index>.jpg`` for cameras and streams.
    With ``videos="video"`` (``predict``'s default) the frames of each video file go to one
    annotated ``<video stem>.mp4`` in the folder instead.

    :meth:`open` creates the folder (when missing) and checks that it is writable, and removes temp
    files that killed runs left there. Each image is written to a hidden temp name and renamed, so
    an existing file of the same name is replaced only by a complete new one.
    """

    def __init__(self, folder: Union[str, Path], quality: int = 95, videos: str = "frames",
                 what: str = "--save") -> None:
        self.folder = Path(folder)
        self.what = f"{what} {self.folder}"
        if self.folder.exists() and not self.folder.is_dir():
            raise InputError(f"{self.what}: exists and is not a folder (expected a folder or a video file name)")
        if videos not in ("frames", "video"):
            raise InputError(f"FramesSink videos: expected 'frames' or 'video', got {videos!r}")
        self.quality = int(quality)
        self.videos = videos
        self.frames = 0
        self.written: List[Path] = []  # video files (videos="video")
        self._used: Dict[str, int] = {}
        self._created: List[Path] = []
        self._video: Optional[VideoSink] = None
        self._video_path: Optional[str] = None

    def start(self) -> None:
        self._created = make_dirs(self.folder, self.what)
        try:
            fd, probe = tempfile.mkstemp(prefix=".edgeseg-probe-", dir=str(self.folder))
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            self._remove_created()
            raise InputError(f"{self.what}: cannot write in this folder ({exc.strerror or exc})") from exc
        remove_stale_temps(self.folder)

    def _unique(self, stem: str, suffix: str) -> str:
        n = self._used.get(stem + suffix, 0)
        self._used[stem + suffix] = n + 1
        return f"{stem}{suffix}" if n == 0 else f"{stem}_{n}{suffix}"

    def _name(self, packet: Packet) -> str:
        path = packet.frame.path
        if path and Path(path).suffix.lower() in IMAGE_SUFFIXES:
            return self._unique(Path(path).stem, ".jpg")
        if path and self._is_video_file(path):
            return f"{Path(path).stem}_{packet.frame.index:06d}.jpg"
        return f"frame_{packet.frame.index:06d}.jpg"

    @staticmethod
    def _is_video_file(path: str) -> bool:
        return Path(path).suffix.lower() in VIDEO_SUFFIXES + (".gif",) and os.path.exists(path)

    def write(self, packet: Packet) -> None:
        self.open()
        path = packet.frame.path
        if self.videos == "video" and path and self._is_video_file(path):
            self._write_video(packet, path)
            return
        self._end_video()
        target = self.folder / self._name(packet)
        data = _encode(packet.annotated, ".jpg", self.quality, self.what)
        f = AtomicFile(target, what=self.what, clean=False)
        try:
            f.tmp.write_bytes(data)
        except BaseException:
            f.discard()
            raise
        f.commit()
        self.frames += 1

    def _write_video(self, packet: Packet, path: str) -> None:
        video = self._video
        if video is None or self._video_path != path:
            self._end_video()
            video = VideoSink(self.folder / self._unique(Path(path).stem, ".mp4"), what="--save")
            video.open()
            self._video, self._video_path = video, path
        video.write(packet)
        self.frames += 1

    def _end_video(self) -> None:
        video, self._video, self._video_path = self._video, None, None
        if video is not None:
            video.close()
            if video.frames:
                self.written.append(video.path)

    def _remove_created(self) -> None:
        for d in reversed(self._created):
            with contextlib.suppress(OSError):
                d.rmdir()  # only when still empty
        self._created = []

    def close(self) -> None:
        try:
            self._end_video()
        finally:
            if not self.frames:
                self._remove_created()  # a folder made for a run without output goes again


class ImageSink(Sink):
    """The annotated frame as one image file (``predict --save out.jpg`` on a single image): written
    to a hidden temp file and renamed onto ``path`` on :meth:`close` (the last frame wins)."""

    def __init__(self, path: Union[str, Path], quality: int = 95, what: str = "--save") -> None:
        self.path = Path(path)
        self.what = f"{what} {self.path}"
        self.suffix = self.path.suffix.lower()
        if self.suffix not in IMAGE_SUFFIXES:
            raise InputError(f"{self.what}: expected an image file name ({', '.join(IMAGE_SUFFIXES[:5])}, ...)")
        if self.path.is_dir():
            raise InputError(f"{self.what}: is a folder (expected an image file name)")
        self.quality = int(quality)
        self.frames = 0
        self._file: Optional[AtomicFile] = None

    def start(self) -> None:
        self._file = AtomicFile(self.path, what=self.what)

    def write(self, packet: Packet) -> None:
        self.open()
        data = _encode(packet.annotated, self.suffix, self.quality, self.what)
        if self._file is None:
            raise InputError(f"{self.what}: a frame arrived after the output was closed")
        self._file.tmp.write_bytes(data)
        self.frames += 1

    def close(self) -> None:
        f, self._file = self._file, None
        if f is None:
            return
        if self.frames:
            f.commit()
        else:
            f.discard()
