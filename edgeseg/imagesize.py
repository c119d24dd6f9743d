"""Declared image sizes read from file headers, without decoding (so a decompression bomb is
refused before OpenCV allocates its pixels).

:func:`declared_size` knows the formats OpenCV decodes here: PNG, JPEG, BMP, GIF, WebP, TIFF,
JPEG 2000 (JP2 and raw codestream), PNM/PAM/PFM, Sun raster, Radiance HDR and AVIF. It reads at most a
few header bytes per segment and never follows a length beyond the file.
"""
from __future__ import annotations

import os
import struct
from typing import BinaryIO, Optional, Tuple

__all__ = ["declared_size", "max_image_pixels", "DEFAULT_MAX_IMAGE_PIXELS", "MAX_PIXELS_ENV"]

#: default pixel budget of :func:`edgeseg.io.read_image` (width x height)
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000
#: environment variable that overrides the budget (an integer; 0 means no budget)
MAX_PIXELS_ENV = "EDGESEG_MAX_IMAGE_PIXELS"


def max_image_pixels() -> int:
    """The pixel budget: ``$EDGESEG_MAX_IMAGE_PIXELS`` if set (0 = none), else 100 MP."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(raw)
    except ValueError:
        from .errors import InputError

        raise InputError(f"{MAX_PIXELS_ENV} must be an integer pixel count (0 = no limit), found {raw!r}") from None
    return value if value > 0 else 0


def declared_size(f: BinaryIO) -> Optional[Tuple[str, int, int]]:
    """``(format, width, height)`` declared by the header of the image in ``f`` (at position 0),
    or ``None`` when the format is not recognized. Raises ``ValueError`` for a recognized but
    truncated or malformed header."""
    head = f.read(64)
    f.seek(0)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        if head[12:16] != b"IHDR":
            raise ValueError("PNG without an IHDR chunk first")
        w, h = struct.unpack(">II", head[16:24])
        return "PNG", w, h
    if head.startswith(b"\xff\xd8"):
        return ("JPEG",) + _jpeg(f)
    if head.startswith(b"BM") and len(head) >= 26:
        hsize = struct.unpack("<I", head[14:18])[0]
        if hsize == 12:  # OS/2 BITMAPCOREHEADER
            w, h = struct.unpack("<HH", head[18:22])
        else:
            w, h = struct.unpack("<ii", head[18:26])
        return "BMP", abs(w), abs(h)
    if head[:6] in (b"GIF87a", b"GIF89a"):
        w, h = struct.unpack("<HH", head[6:10])
        return "GIF", w, h
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ("WebP",) + _webp(head)
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return ("TIFF",) + _tiff(f, head[:2] == b"II")
    if head[:4] == b"\x00\x00\x00\x0c" and head[4:8] == b"jP  ":
        return ("JPEG 2000",) + _jp2(f)
    if head[:4] == b"\xff\x4f\xff\x51":  # raw J2K codestream: SOC then SIZ
        xs, ys, xo, yo = struct.unpack(">IIII", head[8:24])
        return "JPEG 2000", max(xs - xo, 0), max(ys - yo, 0)
    if head[:1] == b"P" and head[1:2] in b"1234567fF" and len(head) > 2 and head[2:3] in b" \t\r\n":
        return ("PNM",) + _pnm(f)
    if head[:4] == b"\x59\xa6\x6a\x95":
        w, h = struct.unpack(">II", head[4:12])
        return "Sun raster", w, h
    if head.startswith((b"#?RADIANCE", b"#?RGBE")):
        return ("Radiance HDR",) + _hdr(f)
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis", b"heic", b"heix", b"mif1", b"msf1"):
        return ("AVIF/HEIF",) + _ispe(f)
    return None


def _need(data: bytes, n: int, what: str) -> bytes:
    if len(data) < n:
        raise ValueError(f"truncated {what}")
    return data


def _jpeg(f: BinaryIO) -> Tuple[int, int]:
    f.seek(2)
    for _ in range(10_000):  # markers before the frame header
        b = f.read(1)
        while b == b"\xff":
            b = f.read(1)
        if not b:
            break
        marker = b[0]
        if marker in (0x01, 0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7):  # no length
            continue
        if marker == 0xD9 or marker == 0xDA:  # EOI or start of scan before any SOF
            break
        seg = _need(f.read(2), 2, "JPEG segment length")
        length = struct.unpack(">H", seg)[0]
        if length < 2:
            raise ValueError("JPEG segment length below 2")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            sof = _need(f.read(5), 5, "JPEG frame header")
            h, w = struct.unpack(">HH", sof[1:5])
            return w, h
        f.seek(length - 2, os.SEEK_CUR)
    raise ValueError("JPEG without a frame header (SOF)")


def _webp(head: bytes) -> Tuple[int, int]:
    kind = head[12:16]
    if kind == b"VP8X":
        _need(head, 30, "WebP VP8X header")
        w = int.from_bytes(head[24:27], "little") + 1
        h = int.from_bytes(head[27:30], "little") + 1
        return w, h
    if kind == b"VP8L":
        _need(head, 25, "WebP VP8L header")
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8 ":
        _need(head, 30, "WebP VP8 header")
        w, h = struct.unpack("<HH", head[26:30])
        return w & 0x3FFF, h & 0x3FFF
    raise ValueError(f"WebP with an unknown first chunk {kind!r}")


def _tiff(f: BinaryIO, little: bool) -> Tuple[int, int]:
    e = "<" if little else ">"
    f.seek(4)
    (ifd,) = struct.unpack(e + "I", _need(f.read(4), 4, "TIFF header"))
    f.seek(ifd)
    (count,) = struct.unpack(e + "H", _need(f.read(2), 2, "TIFF directory"))
    entries = f.read(12 * min(count, 4096))
    w = h = None
    for i in range(len(entries) // 12):
        tag, typ, _n = struct.unpack(e + "HHI", entries[12 * i: 12 * i + 8])
        raw = entries[12 * i + 8: 12 * i + 12]
        value = struct.unpack(e + "H", raw[:2])[0] if typ == 3 else struct.unpack(e + "I", raw)[0]
        if tag == 256:
            w = value
        elif tag == 257:
            h = value
    if w is None or h is None:
        raise ValueError("TIFF directory without ImageWidth/ImageLength")
    return w, h


def _jp2(f: BinaryIO) -> Tuple[int, int]:
    data = f.read(4096)
    i = data.find(b"ihdr")
    if i < 0 or len(data) < i + 12:
        raise ValueError("JP2 without an ihdr box")
    h, w = struct.unpack(">II", data[i + 4: i + 12])
    return w, h


def _tokens(data: bytes, n: int) -> list:
    out, i = [], 2
    while len(out) < n and i < len(data):
        c = data[i:i + 1]
        if c == b"#":
            j = data.find(b"\n", i)
            i = len(data) if j < 0 else j + 1
        elif c.isspace():
            i += 1
        else:
            j = i
            while j < len(data) and not data[j:j + 1].isspace():
                j += 1
            out.append(data[i:j])
            i = j
    return out


def _pnm(f: BinaryIO) -> Tuple[int, int]:
    data = f.read(4096)
    if data[1:2] == b"7":  # PAM: WIDTH w / HEIGHT h lines
        fields = dict(line.split(None, 1) for line in data.split(b"\n")[1:40] if len(line.split(None, 1)) == 2)
        try:
            return int(fields[b"WIDTH"]), int(fields[b"HEIGHT"])
        except (KeyError, ValueError) as exc:
            raise ValueError("PAM header without WIDTH/HEIGHT") from exc
    tok = _tokens(data, 2)
    if len(tok) < 2 or not all(t.isdigit() for t in tok):
        raise ValueError("PNM header without width and height")
    return int(tok[0]), int(tok[1])


def _ispe(f: BinaryIO) -> Tuple[int, int]:
    """The largest image spatial extent ('ispe' property) in the first 256 kB of an ISOBMFF file."""
    data = f.read(256 << 10)
    best: Optional[Tuple[int, int]] = None
    i = data.find(b"ispe")
    while i >= 0:
        if len(data) >= i + 16:
            w, h = struct.unpack(">II", data[i + 8: i + 16])
            if best is None or w * h > best[0] * best[1]:
                best = (w, h)
        i = data.find(b"ispe", i + 4)
    if best is None:
        raise ValueError("AVIF/HEIF without an image size ('ispe')")
    return best


def _hdr(f: BinaryIO) -> Tuple[int, int]:
    data = f.read(8192)
    for line in data.split(b"\n")[1:200]:
        parts = line.split()
        if len(parts) == 4 and parts[0] in (b"-Y", b"+Y") and parts[2] in (b"+X", b"-X"):
            if parts[1].isdigit() and parts[3].isdigit():
                return int(parts[3]), int(parts[1])
    raise ValueError("Radiance HDR without a resolution line")
