"""The segmentation head: box regression with DFL, class scores, mask coefficients and prototypes.

Output of :class:`Segment` in eval mode (the "raw" layout every export keeps):

* ``output0``: ``(B, 4 + nc + nm, A)`` float32 — ``cx, cy, w, h`` in input-image pixels, then ``nc``
  sigmoid class scores, then ``nm`` mask coefficients, for the ``A`` anchors of all levels
  (``A = sum(H_i * W_i)``, e.g. 8400 at 640x640).
* ``output1``: ``(B, nm, H/4, W/4)`` float32 mask prototypes.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import nn

from .blocks import DFL, Conv, DWConv, Proto

__all__ = ["Segment", "make_anchors"]


def make_anchors(feats: Sequence[torch.Tensor], strides: Sequence[float], offset: float = 0.5) -> Tuple[torch.Tensor, torch.Tensor]:
    """Anchor centres in grid units ``(A, 2)`` (x, y) and their strides ``(A, 1)`` for all levels."""
    points, stride_rows = [], []
    for f, s in zip(feats, strides):
        h, w = f.shape[2], f.shape[3]
        sx = torch.arange(w, device=f.device, dtype=f.dtype) + offset
        sy = torch.arange(h, device=f.device, dtype=f.dtype) + offset
        gy, gx = torch.meshgrid(sy, sx, indexing="ij")
        points.append(torch.stack((gx, gy), -1).view(-1, 2))
        stride_rows.append(torch.full((h * w, 1), float(s), dtype=f.dtype, device=f.device))
    return torch.cat(points), torch.cat(stride_rows)


class Segment(nn.Module):
    """YOLO segmentation head over the feature maps ``ch`` (P3, P4, P5).

    ``legacy=True`` is the YOLOv8 class branch (two 3x3 convs); ``False`` is YOLO11's
    (depth-wise 3x3 + point-wise 1x1, twice).
    """

    def __init__(self, nc: int, nm: int, npr: int, ch: Sequence[int], legacy: bool, reg_max: int = 16) -> None:
        super().__init__()
        self.nc, self.nm, self.reg_max, self.nl = nc, nm, reg_max, len(ch)
        self.no = nc + 4 * reg_max
        self.register_buffer("stride", torch.zeros(self.nl), persistent=False)
        self.strides: Tuple[float, ...] = (8.0, 16.0, 32.0)[: self.nl]  # plain floats: export-friendly
        c2 = max(16, ch[0] // 4, 4 * reg_max)
        c3 = max(ch[0], min(nc, 100))
        c4 = max(ch[0] // 4, nm)
        self.cv2 = nn.ModuleList(nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1)) for x in ch)
        if legacy:
            self.cv3 = nn.ModuleList(nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for x in ch)
        else:
            self.cv3 = nn.ModuleList(
                nn.Sequential(
                    nn.Sequential(DWConv(x, x, 3), Conv(x, c3, 1)),
                    nn.Sequential(DWConv(c3, c3, 3), Conv(c3, c3, 1)),
                    nn.Conv2d(c3, nc, 1),
                )
                for x in ch
            )
        self.dfl = DFL(reg_max) if reg_max > 1 else nn.Identity()
        self.proto = Proto(ch[0], npr, nm)
        self.cv4 = nn.ModuleList(nn.Sequential(Conv(x, c4, 3), Conv(c4, c4, 3), nn.Conv2d(c4, nm, 1)) for x in ch)

    def forward(self, xs: List[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """``xs``: feature maps ``(B, ch[i], H_i, W_i)`` -> ``(output0, output1)`` (see module doc)."""
        protos = self.proto(xs[0])
        b = xs[0].shape[0]
        coefs = torch.cat([self.cv4[i](xs[i]).view(b, self.nm, -1) for i in range(self.nl)], 2)
        raw = torch.cat(
            [torch.cat((self.cv2[i](xs[i]), self.cv3[i](xs[i])), 1).view(b, self.no, -1) for i in range(self.nl)], 2
        )
        dist, cls = raw.split((4 * self.reg_max, self.nc), 1)
        anchors, strides = make_anchors(xs, self.strides)
        boxes = self._decode(self.dfl(dist), anchors.transpose(0, 1).unsqueeze(0)) * strides.transpose(0, 1)
        return torch.cat((boxes, cls.sigmoid(), coefs), 1), protos

    @staticmethod
    def _decode(dist: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Distances ``(B, 4, A)`` (left, top, right, bottom) around anchors ``(1, 2, A)`` -> ``cxcywh``."""
        lt, rb = dist.chunk(2, 1)
        x1y1 = anchors - lt
        x2y2 = anchors + rb
        return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1)
