"""Image reading, input normalization and atomic file writes."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Union

import numpy as np

from .errors import ImageReadError, InputError

PathLike = Union[str, "os.PathLike[str]"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pbm", ".pgm", ".ppm")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")


def read_image(path: PathLike) -> np.ndarray:
    """Read an image file as an HxWx3 uint8 BGR array (OpenCV order).

    Grayscale, alpha and 16-bit files are converted. Raises :class:`ImageReadError` naming the path.
    """
    import cv2

    p = Path(path)
    if not p.is_file():
        raise ImageReadError(f"{p}: image not found" if not p.exists() else f"{p}: not a file")
    try:
        data = np.fromfile(str(p), dtype=np.uint8)  # works for non-ASCII paths, unlike cv2.imread
    except OSError as exc:
        raise ImageReadError(f"{p}: cannot read file: {exc}") from exc
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise ImageReadError(f"{p}: not a decodable image (expected JPEG/PNG/BMP/TIFF/WebP, {data.size} bytes found)")
    return to_bgr(img, what=str(p))


def to_bgr(img: Any, what: str = "image") -> np.ndarray:
    """Validate an image array and convert it to contiguous HxWx3 uint8 BGR.

    Accepts HxW (gray), HxWx1, HxWx3 (BGR), HxWx4 (BGRA); uint8, uint16 (scaled by 1/257),
    float (0-1 range). Raises :class:`InputError` for anything else.
    """
    import cv2

    if not isinstance(img, np.ndarray):
        raise InputError(f"{what}: expected a numpy array or an image path, found {type(img).__name__}")
    if img.ndim not in (2, 3) or img.size == 0 or img.shape[0] < 1 or img.shape[1] < 1:
        raise InputError(f"{what}: expected an HxWx3 image array, found shape {img.shape}")
    if img.ndim == 3 and img.shape[2] not in (1, 3, 4):
        raise InputError(f"{what}: expected 1, 3 or 4 channels (HxWxC), found shape {img.shape}")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype == np.bool_:
        img = img.astype(np.uint8) * 255
    elif np.issubdtype(img.dtype, np.floating):
        if not np.isfinite(img).all():
            raise InputError(f"{what}: float image contains NaN or infinity")
        img = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise InputError(f"{what}: expected dtype uint8 (or uint16/float), found {img.dtype}")
    if img.ndim == 2 or img.shape[2] == 1:
        img = cv2.cvtColor(img.reshape(img.shape[0], img.shape[1]), cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(img)


@contextlib.contextmanager
def atomic_write(path: PathLike, suffix: Optional[str] = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``,
    on any error it is removed, so a failed write never leaves a half-written file.

    ``suffix`` sets the temp file's suffix (some writers pick the format from it); default: the
    target's suffix. Works for files; for folders use :func:`atomic_dir`.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_suffix = suffix if suffix is not None else target.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=tmp_suffix, dir=str(target.parent))
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file private (0600): give it the target's mode, or what open() would
        os.chmod(tmp_path, target.stat().st_mode & 0o7777 if target.exists() else 0o666 & ~_umask())
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(path: PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` (an existing
    folder there is removed only then), on error it is removed."""
    import shutil

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=str(target.parent)))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private (0700), mkdir would not
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=str(target.parent)))
            os.replace(target, old / "x")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def path_size(path: PathLike) -> int:
    """Size in bytes of a file, or of every file under a folder (export folders, ``.mlpackage``)."""
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size


def _umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def load_names(source: Any) -> Dict[int, str]:
    """Class names from a dict, a list, or a file (YAML list/dict, a YAML with a ``names`` key,
    or one name per line). Returns {class_id: name}."""
    if source is None:
        return {}
    if isinstance(source, dict):
        return {int(k): str(v) for k, v in source.items()}
    if isinstance(source, (list, tuple)):
        return {i: str(v) for i, v in enumerate(source)}
    p = Path(source)
    if not p.is_file():
        raise InputError(f"names file not found: {p}")
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() in (".yaml", ".yml", ".json"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InputError(f"{p}: not valid YAML: {exc}") from exc
        if isinstance(data, dict) and "names" in data:
            data = data["names"]
        if not isinstance(data, (dict, list)):
            raise InputError(f"{p}: expected a list or mapping of class names, found {type(data).__name__}")
        return load_names(data)
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise InputError(f"{p}: no class names found (expected one name per line)")
    return {i: n for i, n in enumerate(names)}


def expand_sources(spec: PathLike) -> "list[Path]":
    """Image and video files named by a path, a folder (its images and videos, sorted) or a glob.

    Raises :class:`InputError` when nothing matches."""
    import glob

    text = str(spec)
    p = Path(text)
    if any(ch in text for ch in "*?["):
        files = sorted(Path(f) for f in glob.glob(text, recursive=True))
        files = [f for f in files if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES]
        if not files:
            raise InputError(f"no image or video files match {text!r}")
        return files
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES)
        if not files:
            raise InputError(f"folder {p} holds no image or video files ({', '.join(IMAGE_SUFFIXES[:4])}, ... / .mp4, ...)")
        return files
    if not p.exists():
        raise InputError(f"source not found: {p}")
    return [p]


def is_video(path: PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES
