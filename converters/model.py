"""The segmentation model: the layers of an architecture run in order, with skip connections.

``SegmentationModel(arch)(x)`` with ``x`` float32 ``(B, 3, H, W)`` RGB 0-1 (``H`` and ``W``
multiples of the largest stride, 32) returns ``(output0, output1)`` as described in
:mod:`.head`. Parameter names match Ultralytics checkpoints (``model.0.conv.weight`` ...).
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from .arch import build_layers
from .blocks import Conv
from .head import Segment

__all__ = ["SegmentationModel"]


class SegmentationModel(nn.Module):
    """A YOLOv8-seg / YOLO11-seg network built from an architecture description (see :mod:`.arch`).

    Attributes: ``arch`` (the description, a plain dict), ``names`` ({class id: name}),
    ``stride`` (float tensor of the head's strides, e.g. ``[8, 16, 32]``).
    """

    def __init__(self, arch: Dict[str, Any], names: Optional[Dict[int, str]] = None) -> None:
        super().__init__()
        self.arch = copy.deepcopy(arch)
        built = build_layers(self.arch)
        self.model = nn.Sequential(*built.layers)
        self.save = built.save
        self.register_buffer("stride", torch.tensor(built.strides, dtype=torch.float32), persistent=False)
        self.head.stride = self.stride.clone()
        self.head.strides = tuple(float(v) for v in built.strides)
        nc = self.head.nc
        self.names = dict(names) if names else {i: f"class{i}" for i in range(nc)}

    @property
    def head(self) -> Segment:
        return self.model[-1]  # type: ignore[return-value]

    @property
    def nc(self) -> int:
        return self.head.nc

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        outputs: List[Optional[torch.Tensor]] = []
        for m in self.model:
            if m.f != -1:
                x = outputs[m.f] if isinstance(m.f, int) else [x if j == -1 else outputs[j] for j in m.f]
            x = m(x)
            outputs.append(x if m.i in self.save else None)
        return x

    def fuse(self) -> "SegmentationModel":
        """Fold every BatchNorm into its conv (inference only). Returns self."""
        for m in self.modules():
            if isinstance(m, Conv):
                m.fuse()
        return self

    @property
    def fused(self) -> bool:
        return not any(isinstance(m, Conv) and m.bn is not None for m in self.modules())
