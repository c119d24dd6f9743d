"""The torch graph that becomes a TFLite model: NHWC input, boxes normalized to 0-1 inside the
graph, and either the raw layout (one prediction tensor, as Ultralytics' TFLite exports) or the
split layout (boxes, scores, coefs, protos: one tensor each, so each gets its own int8 scale).

    ``raw``   ``output0`` (1, 4+nc+nm, A) [cx, cy, w, h normalized, sigmoid scores, coefs],
              ``output1`` protos (1, H/4, W/4, nm)
    ``split`` ``boxes`` (1, A, 4) cx, cy, w, h normalized; ``scores`` (1, A, nc) after the sigmoid;
              ``coefs`` (1, A, nm); ``protos`` (1, H/4, W/4, nm)

The split graph is also cut into pieces for mixed precision: :func:`head_parts` names the ops of
the head that the quantizer may keep in float (the DFL softmax and the box decode).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import nn

from .head import make_anchors
from .model import SegmentationModel

__all__ = ["TFLiteGraph", "RAW_OUTPUTS", "SPLIT_OUTPUTS"]

RAW_OUTPUTS = ("output0", "output1")
SPLIT_OUTPUTS = ("boxes", "scores", "coefs", "protos")


class TFLiteGraph(nn.Module):
    """``net`` (fused, eval) behind an NHWC float input of fixed size ``hw``.

    ``split``: the four-tensor layout above, else the raw layout. The anchor grid is a constant of
    the graph (static shapes, as the Edge TPU requires)."""

    def __init__(self, net: SegmentationModel, hw: Tuple[int, int], split: bool) -> None:
        super().__init__()
        self.net = net
        self.split = split
        self.hw = (int(hw[0]), int(hw[1]))
        head = net.head
        h, w = self.hw
        feats = [torch.zeros(1, 1, h // int(s), w // int(s)) for s in head.strides]
        anchors, strides = make_anchors(feats, head.strides)  # (A, 2) grid units, (A, 1)
        scale = torch.tensor([w, h], dtype=torch.float32)
        # anchor centres and per-anchor stride in normalized units: box = (anchor -/+ dist) * stride / size
        self.register_buffer("anchors", (anchors * strides / scale).unsqueeze(0), persistent=False)  # (1, A, 2)
        self.register_buffer("stride_n", (strides / scale).unsqueeze(0), persistent=False)  # (1, A, 2)
        self.register_buffer("bins", torch.arange(head.reg_max, dtype=torch.float32), persistent=False)

    def features(self, x: torch.Tensor) -> List[torch.Tensor]:
        """The backbone+neck up to the head's inputs (P3, P4, P5)."""
        net = self.net
        outputs: List[Optional[torch.Tensor]] = []
        last = len(net.model) - 1
        for i, m in enumerate(net.model):
            if m.f != -1:
                x = outputs[m.f] if isinstance(m.f, int) else [x if j == -1 else outputs[j] for j in m.f]
            if i == last:
                return list(x)
            x = m(x)
            outputs.append(x if m.i in net.save else None)
        raise RuntimeError("model has no head")  # pragma: no cover

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        head = self.net.head
        xs = self.features(x.permute(0, 3, 1, 2))
        nc, nm, reg = head.nc, head.nm, head.reg_max
        protos = head.proto(xs[0]).permute(0, 2, 3, 1)  # (1, H/4, W/4, nm)

        def rows(branch: nn.ModuleList, c: int) -> torch.Tensor:
            # anchors-first (1, A, c): in the NHWC graph each level is a plain reshape, no transpose
            return torch.cat([branch[i](xs[i]).permute(0, 2, 3, 1).reshape(1, -1, c) for i in range(head.nl)], 1)

        dist, cls, coefs = rows(head.cv2, 4 * reg), rows(head.cv3, nc), rows(head.cv4, nm)
        # DFL: expected bin of a softmax over the reg_max bins of each side (left, top, right, bottom);
        # the softmax runs over the last axis, so it lowers to one SOFTMAX op
        p = dist.reshape(1, -1, 4, reg).softmax(-1)
        d = (p * self.bins).sum(-1)  # (1, A, 4) in grid units
        lt, rb = d[..., :2], d[..., 2:]
        x1y1 = self.anchors - lt * self.stride_n
        x2y2 = self.anchors + rb * self.stride_n
        boxes = torch.cat(((x1y1 + x2y2) * 0.5, x2y2 - x1y1), -1)  # (1, A, 4) cx, cy, w, h in 0-1
        scores = cls.sigmoid()
        if not self.split:
            return torch.cat((boxes, scores, coefs), -1).transpose(1, 2), protos  # Ultralytics' (1, 4+nc+nm, A)
        return boxes, scores, coefs, protos
