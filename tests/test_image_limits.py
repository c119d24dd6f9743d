"""Images are sized from their headers before decoding: decompression bombs, headers beyond
OpenCV's limits, very long paths, non-regular files and float images in 0-255 get a clear result."""
from __future__ import annotations

import io
import os
import struct
import time
import warnings
import zlib

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from edgeseg.errors import ImageReadError, InputError  # noqa: E402
from edgeseg.imagesize import declared_size  # noqa: E402
from edgeseg.io import read_image, to_bgr  # noqa: E402

IMG = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
FLOAT_FORMATS = (".hdr", ".pfm")
FORMATS = [".png", ".jpg", ".bmp", ".tif", ".webp", ".jp2", ".ppm", ".pgm", ".pbm", ".pam", ".pfm", ".hdr",
           ".sr", ".gif", ".avif"]


def _encode(ext: str, img: np.ndarray = IMG, params=()) -> bytes:
    src = img.astype(np.float32) / 255 if ext in FLOAT_FORMATS else img
    if ext in (".pgm", ".pbm"):
        src = src[:, :, 0]
    try:
        ok, buf = cv2.imencode(ext, src, list(params))
    except cv2.error:
        pytest.skip(f"this OpenCV has no {ext} encoder")
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize("ext", FORMATS)
def test_header_size_matches_what_opencv_decodes(tmp_path, ext):
    data = _encode(ext)
    kind, w, h = declared_size(io.BytesIO(data))
    dec = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert (h, w) == dec.shape[:2] == (37, 53), kind
    p = tmp_path / f"x{ext}"
    p.write_bytes(data)
    assert read_image(p).shape == (37, 53, 3)


@pytest.mark.parametrize("ext,params", [(".jpg", (cv2.IMWRITE_JPEG_PROGRESSIVE, 1)), (".webp", (cv2.IMWRITE_WEBP_QUALITY, 101))])
def test_header_variants(ext, params):
    assert declared_size(io.BytesIO(_encode(ext, params=params)))[1:] == (53, 37)


def _png(w: int, h: int, rows: int = None) -> bytes:
    """A grayscale PNG declaring w x h; ``rows`` rows of real (zero) data, all of them by default."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    z = zlib.compressobj(9)
    row = bytes(w + 1)
    idat = b"".join(z.compress(row) for _ in range(h if rows is None else rows)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_png_bomb_is_refused_before_decoding(tmp_path):
    p = tmp_path / "bomb.png"
    p.write_bytes(_png(12_000, 12_000))  # 144 MP of zeros in ~140 kB: decodes to 432 MB of BGR
    assert p.stat().st_size < 300_000
    t = time.perf_counter()
    with pytest.raises(ImageReadError, match=r"bomb.png: PNG header declares 12000x12000 = 144 MP, above the pixel budget of 100 MP"):
        read_image(p)
    assert time.perf_counter() - t < 1.0


def _jpeg_header(w: int, h: int) -> bytes:
    data = bytearray(_encode(".jpg"))
    i = next(i for i in range(2, len(data)) if data[i] == 0xFF and data[i + 1] == 0xC0)
    data[i + 5:i + 9] = struct.pack(">HH", h, w)
    return bytes(data)


@pytest.mark.parametrize("make", [lambda: _png(1 << 21, 1 << 21, rows=1), lambda: _jpeg_header(60_000, 60_000)],
                         ids=["png", "jpeg"])
def test_header_beyond_opencv_limits_is_an_image_read_error(tmp_path, monkeypatch, make):
    p = tmp_path / "huge.img"
    p.write_bytes(make())
    with pytest.raises(ImageReadError, match="above the pixel budget"):
        read_image(p)
    monkeypatch.setenv("EDGESEG_MAX_IMAGE_PIXELS", "0")  # no budget: OpenCV's own limit answers, never raw cv2.error
    with pytest.raises(ImageReadError, match="huge.img"):
        read_image(p)


def test_pixel_budget_is_configurable(tmp_path, monkeypatch):
    p = tmp_path / "small.png"
    p.write_bytes(_encode(".png"))
    with pytest.raises(ImageReadError, match="53x37 = 0 MP, above the pixel budget of 0.001 MP"):
        read_image(p, max_pixels=1000)
    monkeypatch.setenv("EDGESEG_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(ImageReadError, match="EDGESEG_MAX_IMAGE_PIXELS"):
        read_image(p)
    assert read_image(p, max_pixels=2000).shape == (37, 53, 3)
    monkeypatch.setenv("EDGESEG_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(InputError, match="must be an integer pixel count"):
        read_image(p)


def test_very_long_path(tmp_path):
    p = tmp_path / ("a" * 5000 + ".jpg")
    with pytest.raises(ImageReadError, match=r"\(50\d\d characters\): cannot read file \(File name too long\)"):
        read_image(p)


def test_folders_and_fifos_named_like_images(tmp_path):
    d = tmp_path / "folder.jpg"
    d.mkdir()
    with pytest.raises(ImageReadError, match="folder.jpg: not a regular file"):
        read_image(d)
    if hasattr(os, "mkfifo"):
        f = tmp_path / "pipe.png"
        os.mkfifo(f)
        with pytest.raises(ImageReadError, match="pipe.png: not a regular file"):
            read_image(f)  # must not block on open


def test_unrecognized_and_corrupt_headers(tmp_path):
    p = tmp_path / "x.png"
    p.write_bytes(b"GIF87a")  # recognized, truncated
    with pytest.raises(ImageReadError, match="corrupt image header|not a decodable"):
        read_image(p)
    p.write_bytes(b"hello world, not an image")
    with pytest.raises(ImageReadError, match="not a recognized image"):
        read_image(p)


def test_float_images_in_0_255_are_not_clipped_to_white():
    src = IMG.astype(np.float32)
    with pytest.warns(UserWarning, match="values up to 2\\d\\d .*read as 0-255"):
        out = to_bgr(src)
    assert (out == IMG).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (to_bgr(src / 255) == IMG).all()  # 0-1 floats: no warning


def test_float_tiff_in_0_255(tmp_path):
    p = tmp_path / "f.tif"
    ok, buf = cv2.imencode(".tif", IMG.astype(np.float32))
    p.write_bytes(buf.tobytes())
    with pytest.warns(UserWarning, match="read as 0-255"):
        out = read_image(p)
    assert (out == IMG).all()


def test_int32_tiff_is_an_image_read_error(tmp_path):
    p = tmp_path / "i.tif"
    ok, buf = cv2.imencode(".tif", IMG[:, :, 0].astype(np.int32))
    if cv2.imdecode(buf, cv2.IMREAD_UNCHANGED).dtype != np.int32:
        pytest.skip("this OpenCV does not keep int32 TIFFs")
    p.write_bytes(buf.tobytes())
    with pytest.raises(ImageReadError, match="i.tif: expected dtype uint8"):
        read_image(p)
