"""Image reading, input normalization and atomic file writes."""
from __future__ import annotations

import contextlib
import os
import re
import stat
import struct
import tempfile
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence, Type, Union

import numpy as np

from .errors import ImageReadError, InputError, SourceError

PathLike = Union[str, "os.PathLike[str]"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pbm", ".pgm", ".ppm")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")


def read_image(path: PathLike, max_pixels: Optional[int] = None) -> np.ndarray:
    """Read an image file as an HxWx3 uint8 BGR array (OpenCV order).

    Grayscale, alpha, 16-bit and float files are converted (see :func:`to_bgr`). The size the
    header declares is read first and the file is decoded only when ``width x height`` is within
    ``max_pixels`` (default: ``$EDGESEG_MAX_IMAGE_PIXELS``, else 100 MP; 0 = no budget) and its
    format is one OpenCV decodes here (:mod:`edgeseg.imagesize`). Raises :class:`ImageReadError`
    naming the path for a missing, unreadable, unrecognized, over-budget or undecodable file.
    """
    import cv2

    from .imagesize import MAX_PIXELS_ENV, declared_size, max_image_pixels

    p = Path(path)
    shown = str(p) if len(str(p)) <= 200 else f"{str(p)[:120]}...{str(p)[-60:]} ({len(str(p))} characters)"
    budget = max_image_pixels() if max_pixels is None else max_pixels
    try:
        st = p.stat()
        if not stat.S_ISREG(st.st_mode):
            raise ImageReadError(f"{shown}: not a regular file (a folder, FIFO or device)")
        with open(p, "rb") as f:
            try:
                declared = declared_size(f)
            except (ValueError, struct.error) as exc:
                raise ImageReadError(f"{shown}: corrupt image header ({exc})") from exc
            if declared is None:
                raise ImageReadError(
                    f"{shown}: not a recognized image (expected JPEG/PNG/BMP/TIFF/WebP/GIF/AVIF/JPEG 2000/PNM, "
                    f"{st.st_size} bytes starting with {f.read(8)!r})"
                )
            kind, w, h = declared
            if w < 1 or h < 1:
                raise ImageReadError(f"{shown}: {kind} header declares an empty image ({w}x{h})")
            if budget and w * h > budget:
                raise ImageReadError(
                    f"{shown}: {kind} header declares {w}x{h} = {w * h / 1e6:.0f} MP, above the pixel budget of "
                    f"{budget / 1e6:g} MP (raise it with {MAX_PIXELS_ENV}=<pixels> or read_image(max_pixels=...))"
                )
            f.seek(0)
            data = np.frombuffer(f.read(), dtype=np.uint8)  # any path, unlike cv2.imread
    except OSError as exc:  # ENAMETOOLONG, EACCES, ENOENT, EIO...
        what = "image not found" if isinstance(exc, FileNotFoundError) else f"cannot read file ({exc.strerror or exc})"
        raise ImageReadError(f"{shown}: {what}") from exc
    try:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except cv2.error as exc:  # sizes above OpenCV's own limits, codec failures
        raise ImageReadError(f"{shown}: OpenCV cannot decode this {kind} ({w}x{h}): {str(exc).strip()[-200:]}") from exc
    if img is None:
        raise ImageReadError(f"{shown}: not a decodable image ({kind} header, {data.size} bytes found)")
    try:
        return to_bgr(img, what=shown)
    except InputError as exc:
        raise ImageReadError(str(exc)) from exc


def to_bgr(img: Any, what: str = "image") -> np.ndarray:
    """Validate an image array and convert it to contiguous HxWx3 uint8 BGR.

    Accepts HxW (gray), HxWx1, HxWx3 (BGR), HxWx4 (BGRA); uint8, uint16 (scaled by 1/257), bool,
    float in 0-1. A float image whose values exceed 1.0 is taken as 0-255 (with a warning, once
    per call site), never silently clipped to white. Raises :class:`InputError` for anything else.
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
        lo, hi = float(img.min()), float(img.max())
        scale = 255.0
        if hi > 1.0 + 1e-6:
            scale = 1.0
            warnings.warn(
                f"{what}: float image with values up to {hi:g} (expected 0-1): read as 0-255"
                + (", values above 255 clipped" if hi > 255.0 else ""),
                stacklevel=2,
            )
        elif lo < 0.0:
            warnings.warn(f"{what}: float image with values down to {lo:g} (expected 0-1): clipped at 0", stacklevel=2)
        img = np.clip(img * scale + 0.5, 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise InputError(f"{what}: expected dtype uint8 (or uint16/bool/float), found {img.dtype}")
    if img.ndim == 2 or img.shape[2] == 1:
        img = cv2.cvtColor(img.reshape(img.shape[0], img.shape[1]), cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(img)


#: hidden temp files of atomic writes: ``.<target name>.edgeseg-<pid>-<random><suffix>``
_TMP_TAG = "edgeseg-"


class AtomicFile:
    """A hidden temp file beside ``path`` that becomes ``path`` only on :meth:`commit`.

    Until then the target is untouched: :meth:`discard` (or a crash, or SIGKILL) leaves the previous
    file as it was. The committed file gets the target's old mode, or what ``open()`` would create
    under the current umask (0644 under umask 022), never mkstemp's private 0600. Missing parent
    folders are created, and removed again by :meth:`discard` when they are still empty. Temp files
    of processes that no longer run (a SIGKILLed run) are removed when the next one starts.

    ``suffix``: the temp file's suffix (writers such as OpenCV pick the format from it); default:
    the target's. ``what`` prefixes error messages (e.g. ``"--json out.jsonl"``); ``clean=False``
    skips the stale-temp sweep (a writer of many files sweeps the folder once). Raises
    :class:`InputError` when the folder cannot be created or written.
    """

    def __init__(self, path: PathLike, suffix: Optional[str] = None, what: Optional[str] = None,
                 clean: bool = True) -> None:
        self.target = Path(path)
        self.what = what or str(self.target)
        self.committed = False
        self._created = make_dirs(self.target.parent, self.what)
        if clean:
            remove_stale_temps(self.target.parent, self.target.name)
        tmp_suffix = suffix if suffix is not None else self.target.suffix
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.target.name}.{_TMP_TAG}{os.getpid()}-",
                                       suffix=tmp_suffix, dir=str(self.target.parent))
        except OSError as exc:
            self._remove_created()
            raise InputError(f"{self.what}: cannot write in {self.target.parent} "
                             f"({exc.strerror or exc}); expected a writable folder") from exc
        os.close(fd)
        self.tmp = Path(tmp)

    def commit(self) -> Path:
        """Give the temp file its mode and rename it onto the target (atomic on one filesystem)."""
        try:
            mode = self.target.stat().st_mode & 0o7777 if self.target.exists() else 0o666 & ~_umask()
            os.chmod(self.tmp, mode)
            os.replace(self.tmp, self.target)
        except OSError as exc:
            self.discard()
            raise InputError(f"{self.what}: cannot move the finished file onto {self.target}: {exc}") from exc
        self.committed = True
        return self.target

    def discard(self) -> None:
        """Remove the temp file (and the folders made for it, when empty); the target is untouched."""
        with contextlib.suppress(OSError):
            self.tmp.unlink()
        self._remove_created()

    def _remove_created(self) -> None:
        for d in reversed(self._created):
            with contextlib.suppress(OSError):
                d.rmdir()  # only when empty
        self._created = []


def make_dirs(folder: Path, what: str) -> "list[Path]":
    """Create ``folder`` and its missing parents; returns the folders created (outermost first).
    Raises :class:`InputError` (prefixed by ``what``) when a parent is a file or cannot be made."""
    missing = []
    p = folder
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    if p.exists() and not p.is_dir():
        raise InputError(f"{what}: {p} is not a folder (expected a folder to write {folder} in)")
    created = []
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            for c in reversed(created):
                with contextlib.suppress(OSError):
                    c.rmdir()
            raise InputError(f"{what}: cannot create the folder {d} ({exc.strerror or exc})") from exc
        created.append(d)
    return created


def remove_stale_temps(folder: PathLike, name: Optional[str] = None) -> int:
    """Remove the hidden temp files and folders that atomic writes in ``folder`` (of the target
    ``name`` only, when given) left behind because their process was killed: the pid in the temp
    name no longer runs. Temp files of running processes are left alone. Returns how many were removed."""
    import glob
    import shutil

    folder = Path(folder)
    pattern = f".{glob.escape(name)}.{_TMP_TAG}*" if name is not None else f".*.{_TMP_TAG}*"
    removed = 0
    try:
        entries = list(folder.glob(pattern))
    except OSError:
        return 0
    for entry in entries:
        m = re.match(rf"^\..+?\.{_TMP_TAG}(\d+)-", entry.name)
        if not m or _pid_alive(int(m.group(1))):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed += 1
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError):
        return True  # another user's process, or unknowable: leave its file alone
    return True


@contextlib.contextmanager
def atomic_write(path: PathLike, suffix: Optional[str] = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``,
    on any error it is removed, so a failed write never leaves a half-written file.

    ``suffix`` sets the temp file's suffix (some writers pick the format from it); default: the
    target's suffix. Works for files; for folders use :func:`atomic_dir`; for files written over
    a whole run, use :class:`AtomicFile`.
    """
    f = AtomicFile(path, suffix=suffix)
    try:
        yield f.tmp
    except BaseException:
        f.discard()
        raise
    f.commit()


@contextlib.contextmanager
def atomic_dir(path: PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` (an existing
    folder there is removed only then), on error it is removed."""
    import shutil

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target.parent, target.name)
    prefix = f".{target.name}.{_TMP_TAG}{os.getpid()}-"
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=str(target.parent)))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private (0700), mkdir would not
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=prefix + "old-", dir=str(target.parent)))
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


#: what the file lister picks from folders and globs by default: images, videos, animated GIFs
MEDIA_SUFFIXES = IMAGE_SUFFIXES + VIDEO_SUFFIXES + (".gif",)


def list_files(spec: PathLike, suffixes: Sequence[str] = MEDIA_SUFFIXES, *, what: str = "images or videos",
               error: Type[Exception] = SourceError) -> "list[Path]":
    """The one file lister of edgeseg (``predict``, ``run``, ``verify``): the files a path, a folder
    or a glob names.

    - a folder: its entries whose suffix is in ``suffixes`` (any case), sorted by name; a glob
      (``*``, ``?``, ``[``): the matches with such a suffix, sorted;
    - entries that are not regular files (a folder or a FIFO named ``x.jpg``) are *listed*, so the
      reader reports them instead of their being skipped silently; hidden names (``.x.jpg``, the temp
      files of atomic writes) are not;
    - a path to one file: that file, whatever its suffix.

    Raises ``error`` (:class:`SourceError` by default) naming the path when nothing is found;
    ``what`` names the expected kind in that message.
    """
    import glob

    text = os.path.expanduser(str(spec))
    p = Path(text)
    wanted = tuple(x.lower() for x in suffixes)
    hint = ", ".join(wanted[:4]) + (", ..." if len(wanted) > 4 else "")
    if any(ch in text for ch in "*?[") and not p.exists():
        found = sorted(Path(f) for f in glob.glob(text, recursive=True)
                       if Path(f).suffix.lower() in wanted and not Path(f).name.startswith("."))
        if not found:
            raise error(f"{text}: the pattern matches no files (expected {what}: {hint})")
        return found
    if p.is_dir():
        try:
            found = sorted(e for e in p.iterdir() if e.suffix.lower() in wanted and not e.name.startswith("."))
        except OSError as exc:
            raise error(f"{p}: cannot list the folder ({exc.strerror or exc})") from exc
        if not found:
            raise error(f"{p}: folder holds no {what} (expected files such as {hint})")
        return found
    if not os.path.lexists(text):
        raise error(f"{p}: not found (no such file or folder)")
    return [p]


def is_video(path: PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES
