"""One image fetched over http(s) (``predict --source https://host/img.jpg``), as a one-frame source.

The download has a timeout and a size cap; the bytes go through :func:`edgeseg.io.read_image`
(the same decoding and checks as a local file). A host that cannot be reached, an HTTP error or a
body that is not an image raises :class:`~edgeseg.errors.SourceError` naming the URL.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, Optional

import numpy as np

from ...errors import EdgesegError, SourceError
from ...io import read_image
from .base import Frame, Source

__all__ = ["UrlImageSource", "fetch_image"]

#: the largest image body downloaded (bytes); larger answers are refused, not truncated
MAX_BYTES = 64 * 1024 * 1024


def fetch_image(url: str, timeout: float = 10.0, max_bytes: int = MAX_BYTES) -> np.ndarray:
    """Download ``url`` and decode it as an HxWx3 uint8 BGR image (:func:`edgeseg.io.read_image`)."""
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit

    name = Path(urlsplit(url).path).name or "image"
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "edgeseg"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            data = resp.read(max_bytes + 1)
    except urllib.error.HTTPError as exc:
        raise SourceError(f"{url}: the server answered HTTP {exc.code} {exc.reason} (expected an image)") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SourceError(f"{url}: cannot fetch the image ({reason}; waited up to {timeout:.0f}s)") from exc
    if len(data) > max_bytes:
        raise SourceError(f"{url}: the answer is larger than {max_bytes // 2**20} MiB (expected an image file)")
    fd, tmp = tempfile.mkstemp(prefix="edgeseg-url-", suffix=Path(name).suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            return read_image(tmp)
        except EdgesegError as exc:  # name the URL, not the temp file
            raise SourceError(str(exc).replace(tmp, url)) from exc
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


class UrlImageSource(Source):
    """An http(s) image URL as a one-frame file source (not live). The image is fetched here, so
    an unreachable URL fails at once."""

    live = False

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.name = url
        self.total = 1
        self._image = fetch_image(url, timeout=timeout)
        self._done = False

    def frames(self, stop: Optional[threading.Event] = None) -> Iterator[Frame]:
        if self._done or (stop is not None and stop.is_set()):
            return
        self._done = True
        yield Frame(self._image, 0, time.monotonic(), self.name)

    @property
    def stats(self) -> Dict[str, int]:
        n = int(self._done)
        return {"captured": n, "delivered": n, "dropped": 0, "reconnects": 0, "skipped": 0}

    def close(self) -> None:
        self._done = True
