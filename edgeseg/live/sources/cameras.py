"""OpenCV build probes and the openers of the live kinds: V4L2/camera indices, network streams
(FFmpeg), GStreamer pipelines and the Raspberry Pi camera (picamera2).

Each opener returns a capture (``read() -> (ok, BGR image)``, ``release()``) or raises
:class:`~edgeseg.errors.SourceError` naming what was expected and found; :class:`~.live.LiveSource`
calls it once at start and again on every reconnect.

RTSP transport: OpenCV's FFmpeg backend asks for RTSP over TCP first (``rtsp_flags=prefer_tcp``)
unless ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` is set, so no smeared frames from lost UDP packets on
Wi-Fi. edgeseg never changes the environment (grabber threads reconnect concurrently, and a
process's environment is not safe to change while other threads read it); to force a transport,
set e.g. ``OPENCV_FFMPEG_CAPTURE_OPTIONS="rtsp_transport;tcp"`` before starting.
"""
from __future__ import annotations

import contextlib
import platform
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from ...backend import module_available
from ...errors import BackendUnavailableError, SourceError
from .base import Capture, cv2_module

__all__ = ["opencv_has", "list_cameras", "camera_devices", "picamera_available", "open_camera", "open_stream",
           "open_gstreamer", "PiCamera", "redact"]


# -- what this machine and this OpenCV have ---------------------------------------------------------

def opencv_has(feature: str) -> bool:
    """Whether this OpenCV build has ``feature`` ("GStreamer", "FFMPEG", "GUI", "v4l/v4l2")
    according to ``cv2.getBuildInformation()``."""
    info = cv2_module().getBuildInformation()
    if feature.upper() == "GUI":
        m = re.search(r"^\s*GUI:\s*(\S+)", info, re.M)
        return bool(m) and m.group(1).upper() not in ("NONE", "NO")
    m = re.search(rf"^\s*{re.escape(feature)}:\s*(\S+)", info, re.M | re.I)
    return bool(m) and m.group(1).upper().startswith("YES")


def camera_devices(root: Union[str, Path] = "/") -> List[Dict[str, str]]:
    """Video devices under ``root`` (Linux): ``/dev/video<N>`` sorted by N, each as ``{"device":
    "/dev/video0", "index": "0", "name": <sysfs name or "">}``. ``root`` is a fixture tree in tests."""
    r = Path(root)
    found = []
    for dev in (r / "dev").glob("video*"):
        m = re.fullmatch(r"video(\d+)", dev.name)
        if not m:
            continue
        name_file = r / "sys" / "class" / "video4linux" / dev.name / "name"
        try:
            name = name_file.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            name = ""
        found.append((int(m.group(1)), {"device": f"/dev/{dev.name}", "index": m.group(1), "name": name}))
    return [d for _, d in sorted(found, key=lambda t: t[0])]


def list_cameras(root: Union[str, Path] = "/") -> List[str]:
    """Video device paths found on this machine (``/dev/video*`` on Linux, sorted by number);
    :func:`camera_devices` adds their names."""
    return [d["device"] for d in camera_devices(root)]


def picamera_available() -> bool:
    """Whether ``picamera2`` can be imported (Raspberry Pi OS with python3-picamera2)."""
    return module_available("picamera2")


def redact(url: str) -> str:
    """``rtsp://user:pass@host`` -> ``rtsp://user:***@host`` for messages."""
    return re.sub(r"(://[^:/@]+:)[^@/]*@", r"\1***@", url)


# -- openers ----------------------------------------------------------------------------------------

def open_camera(device: Union[int, str], width: Optional[int], height: Optional[int],
                fps: Optional[float], fourcc: Optional[str]) -> Any:
    """A V4L2 camera (Linux; the default API elsewhere) in the requested mode."""
    cv2 = cv2_module()
    api = cv2.CAP_V4L2 if platform.system() == "Linux" else cv2.CAP_ANY
    cap = cv2.VideoCapture(device, api)
    if not cap.isOpened():
        cap.release()
        found = list_cameras()
        raise SourceError(
            f"camera {device!r} cannot be opened (expected a working video device); "
            + (f"devices found: {', '.join(found)}" if found else "no /dev/video* devices found")
            + (" — on a Raspberry Pi camera module use --source picamera" if not found else "")
        )
    if fourcc:
        cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*fourcc[:4].ljust(4)))
    if width:
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, int(width))
    if height:
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, int(height))
    if fps:
        cap.set(cv2.CAP_PROP_FPS, float(fps))
    with contextlib.suppress(Exception):  # not every driver supports it; the grabber drops anyway
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    return cap


def open_stream(url: str, timeout_s: float) -> Any:
    """A network stream through OpenCV's FFmpeg backend, waiting up to ``timeout_s`` to open and
    per read. Reads the environment as it is (see the module docstring); never changes it."""
    cv2 = cv2_module()
    ms = int(timeout_s * 1000)
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
    cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"{redact(url)}: cannot open the stream with OpenCV's FFmpeg backend "
                          f"(expected a reachable RTSP/HTTP MJPEG/HLS URL; waited up to {timeout_s:.0f}s)")
    return cap


def open_gstreamer(pipeline: str) -> Any:
    """A GStreamer pipeline ending in ``appsink`` (appended when missing)."""
    cv2 = cv2_module()
    if not opencv_has("GStreamer"):
        raise SourceError(
            "a GStreamer pipeline was given but this OpenCV build has no GStreamer support "
            f"(cv2 {cv2.__version__}; the opencv-python wheels are built without it). Use the system "
            "OpenCV (e.g. apt install python3-opencv, or JetPack's OpenCV on Jetson) in a venv created "
            "with --system-site-packages, or build OpenCV with -DWITH_GSTREAMER=ON")
    if "appsink" not in pipeline:
        pipeline += " ! videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1"
    cap = cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"GStreamer pipeline cannot be started: {pipeline!r} "
                          "(check it with gst-launch-1.0, replacing appsink by fakesink)")
    return cap


class PiCamera(Capture):
    """picamera2 (libcamera) wrapped as a capture: BGR frames for OpenCV."""

    def __init__(self, num: int, width: Optional[int], height: Optional[int], fps: Optional[float]) -> None:
        try:
            from picamera2 import Picamera2  # type: ignore[import-not-found]
        except ImportError as exc:
            raise BackendUnavailableError(
                "the Raspberry Pi camera needs picamera2, which is not importable here "
                "(on Raspberry Pi OS: sudo apt install python3-picamera2, and create the venv with "
                "--system-site-packages)") from exc
        try:
            self.cam = Picamera2(num)
            # libcamera's "RGB888" is stored B,G,R per pixel: exactly OpenCV's BGR order
            main = {"size": (int(width or 640), int(height or 480)), "format": "RGB888"}
            controls = {"FrameRate": float(fps)} if fps else {}
            self.cam.configure(self.cam.create_video_configuration(main=main, controls=controls, buffer_count=2))
            self.cam.start()
        except Exception as exc:
            raise SourceError(f"Raspberry Pi camera {num} cannot be started: {exc}") from exc

    def read(self) -> Tuple[bool, Optional[np.ndarray]]:
        img = self.cam.capture_array("main")
        return (img is not None), (np.ascontiguousarray(img[..., :3]) if img is not None else None)

    def release(self) -> None:
        try:
            self.cam.stop()
            self.cam.close()
        except Exception:  # pragma: no cover - device cleanup
            pass
