"""Letterbox and tensor packing, identical to Ultralytics' so boxes agree.

Coordinate frames: *source* pixels (the user's image), *input* pixels (the letterboxed model
input, H x W), *proto* pixels (the mask prototypes, H/4 x W/4 for YOLO-seg).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from .backend import TensorSpec
from .errors import InputError

__all__ = ["Letterbox", "letterbox_geometry", "Preprocessor", "PAD_VALUE"]

PAD_VALUE = 114


@dataclass(frozen=True)
class Letterbox:
    """How a source image maps into the model input: ``input = source * gain + (pad_x, pad_y)``."""

    orig_shape: Tuple[int, int]  # (H, W) source
    input_shape: Tuple[int, int]  # (H, W) model input
    resized: Tuple[int, int]  # (H, W) of the scaled image inside the input
    gain: float
    pad: Tuple[int, int]  # (left, top) in input pixels

    @property
    def gains(self) -> Tuple[float, float]:
        """(x, y) scale of the resize as it was done: each side is rounded to whole pixels, so
        the two axes differ slightly from ``gain`` (``resized / orig`` per axis, as Ultralytics'
        ``scale_boxes`` and its validation's ``ratio_pad`` use)."""
        return self.resized[1] / self.orig_shape[1], self.resized[0] / self.orig_shape[0]

    def to_source(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Input-pixel xyxy boxes to source pixels, clipped to the image (in place, returned)."""
        b = boxes_xyxy
        xs, ys = b[:, 0::2], b[:, 1::2]  # slices are views: in-place work reaches ``b``
        gx, gy = self.gains
        xs -= self.pad[0]
        ys -= self.pad[1]
        xs /= gx
        ys /= gy
        h, w = self.orig_shape
        np.clip(xs, 0, w, out=xs)
        np.clip(ys, 0, h, out=ys)
        return b


def letterbox_geometry(orig_shape: Tuple[int, int], new_shape: Tuple[int, int], stride: int = 32,
                       auto: bool = False, scaleup: bool = True) -> Letterbox:
    """Ultralytics' LetterBox arithmetic: scale to fit, pad evenly (``auto``: pad only to a
    multiple of ``stride``, giving a rectangular input)."""
    h, w = orig_shape
    if h < 1 or w < 1:
        raise InputError(f"expected an image of at least 1x1 pixels, found {w}x{h}")
    r = min(new_shape[0] / h, new_shape[1] / w)
    if not scaleup:
        r = min(r, 1.0)
    # a very thin image (1 x 5000) keeps at least one pixel across
    new_w, new_h = max(int(round(w * r)), 1), max(int(round(h * r)), 1)
    dw, dh = new_shape[1] - new_w, new_shape[0] - new_h
    if auto:
        dw, dh = dw % stride, dh % stride
    left, right = int(round(dw / 2 - 0.1)), int(round(dw / 2 + 0.1))
    top, bottom = int(round(dh / 2 - 0.1)), int(round(dh / 2 + 0.1))
    return Letterbox(
        orig_shape=(h, w),
        input_shape=(new_h + top + bottom, new_w + left + right),
        resized=(new_h, new_w),
        gain=r,
        pad=(left, top),
    )


class Preprocessor:
    """Turns a BGR uint8 image into the model's input tensor.

    ``spec`` is the model input; ``imgsz`` (H, W) the letterbox target; ``rect`` pads only to a
    multiple of ``stride`` (for dynamic-shape models). Layout (NCHW/NHWC) and dtype (float32,
    float16, int8/uint8 with scale and zero point) follow ``spec``.
    """

    def __init__(self, spec: TensorSpec, imgsz: Tuple[int, int], stride: int = 32, rect: bool = False) -> None:
        self.spec = spec
        self.imgsz = imgsz
        self.stride = stride
        self.rect = rect
        self.nhwc = is_nhwc(spec.shape)
        dtype = np.dtype(spec.dtype)
        self.dtype = dtype
        if np.issubdtype(dtype, np.integer):
            if spec.scale is None:
                if dtype != np.uint8:
                    raise InputError(f"input {spec.name!r} is {dtype} without quantization parameters; expected float or quantized input")
                self._lut = np.arange(256, dtype=np.uint8)  # raw 0-255 pixels
            else:
                info = np.iinfo(dtype)
                q = np.rint(np.arange(256) / 255.0 / spec.scale + spec.zero_point)
                self._lut = np.clip(q, info.min, info.max).astype(dtype)
        elif np.issubdtype(dtype, np.floating):
            self._lut = np.arange(256, dtype=np.float32) / np.float32(255.0)
        else:
            raise InputError(f"input {spec.name!r} has dtype {dtype}; expected float32/float16/int8/uint8")
        # the usual integer inputs need no table: raw pixels (a copy) or int8 with scale 1/255 and
        # zero point -128 (q = pixel - 128: the top bit flipped), each several times faster than LUT
        codes = np.arange(256, dtype=np.uint8)
        self._xor: Optional[int] = None
        if self._lut.dtype.itemsize == 1:
            for mask in (0, 0x80):
                if np.array_equal(self._lut.view(np.uint8), codes ^ np.uint8(mask)):
                    self._xor = mask

    def geometry(self, orig_shape: Tuple[int, int]) -> Letterbox:
        return letterbox_geometry(orig_shape, self.imgsz, self.stride, auto=self.rect)

    def __call__(self, img: np.ndarray, out: Optional[np.ndarray] = None) -> Tuple[np.ndarray, Letterbox]:
        """(tensor with batch dim, letterbox geometry) for one BGR uint8 image. ``out``: an array
        of the input's fixed shape and dtype to fill (the backend's own input tensor) instead of
        a new one; it is returned."""
        import cv2

        lb = self.geometry(img.shape[:2])
        if out is not None:
            want = (1, 3, *lb.input_shape) if not self.nhwc else (1, *lb.input_shape, 3)
            if tuple(out.shape) != want or out.dtype != self.dtype:
                raise InputError(f"expected an input buffer of shape {want} and dtype {self.dtype}, "
                                 f"found {tuple(out.shape)} {out.dtype}")
        (left, top), (rh, rw) = lb.pad, lb.resized
        ih, iw = lb.input_shape
        if lb.resized != lb.orig_shape:
            img = cv2.resize(img, (rw, rh), interpolation=cv2.INTER_LINEAR)
        direct = out is not None and out.dtype == self._lut.dtype
        if self.nhwc:
            # only the image area is converted, straight into the tensor; the padding is filled
            # with the converted gray value (the same numbers as converting a padded canvas)
            x = out if direct else np.empty((1, ih, iw, 3), self._lut.dtype)
            t, gray = x[0], self._lut[PAD_VALUE]
            t[:top] = gray
            t[top + rh:] = gray
            t[top: top + rh, :left] = gray
            t[top: top + rh, left + rw:] = gray
            self._convert(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), t[top: top + rh, left: left + rw])
        else:
            # the resized image goes into a gray canvas, split into planes R, G, B
            canvas = np.empty((ih, iw, 3), np.uint8)
            canvas[:top] = PAD_VALUE
            canvas[top + rh:] = PAD_VALUE
            canvas[top: top + rh, :left] = PAD_VALUE
            canvas[top: top + rh, left + rw:] = PAD_VALUE
            canvas[top: top + rh, left: left + rw] = img
            x = out if direct else np.empty((1, 3, ih, iw), self._lut.dtype)
            for c, plane in enumerate(reversed(cv2.split(canvas))):  # B, G, R planes -> R, G, B
                self._convert(plane, x[0, c])
        if out is not None:
            if not direct:  # float16 inputs: converted through float32
                out[...] = x
            return out, lb
        return (x if x.dtype == self.dtype else x.astype(self.dtype)), lb

    def _convert(self, pixels: np.ndarray, dst: np.ndarray) -> None:
        """uint8 pixels -> the input dtype: x / 255 as a true float32 division (as Ultralytics
        computes it: int8-weight models quantize activations at run time and amplify last-bit
        differences), or the quantized value through a 256-entry table for integer inputs."""
        if self._lut.dtype == np.float32:
            np.divide(pixels, np.float32(255.0), out=dst, dtype=np.float32)
        elif self._xor is not None:
            np.bitwise_xor(pixels, np.uint8(self._xor), out=dst.view(np.uint8))
        else:
            import cv2

            cv2.LUT(pixels, self._lut, dst=dst)


def is_nhwc(shape: Tuple[Optional[int], ...]) -> bool:
    """Whether a 4-D image input is NHWC (channels last)."""
    if len(shape) != 4:
        raise InputError(f"expected a 4-D image input (NCHW or NHWC), found shape {tuple(shape)}")
    if shape[1] == 3:
        return False
    if shape[3] == 3:
        return True
    if shape[1] is None and shape[3] not in (None, 3):
        return False
    if shape[3] is None and shape[1] not in (None, 3):
        return True
    return False  # fully dynamic: assume NCHW, the ONNX/PyTorch convention
