"""The trainer (installed as ``edgeseg.converters.train``; needs ``pip install 'edgeseg[convert]'``).

    from edgeseg.converters import train
    result = train(data="coco8-seg.yaml", model="yolov8n-seg", epochs=3, imgsz=320, batch=4)
    result.best, result.rows[-1]["metrics/mAP50(M)"]

Command line: ``edgeseg train --data ... --model ...`` or, for several processes and machines,
``torchrun --nproc_per_node 2 -m edgeseg.converters.train --data ...`` (the same options).
Modules: :mod:`.data` (dataset, augmentation, sampler), :mod:`.loss` (assignment and losses),
:mod:`.nets` (model starts, EMA, parameter groups), :mod:`.trainer` (the loop).
"""
from __future__ import annotations

import sys
import types
from typing import Any

from .trainer import TrainConfig, TrainResult, train

__all__ = ["train", "TrainConfig", "TrainResult"]


class _CallableModule(types.ModuleType):
    """``edgeseg.converters.train`` is both this package and the function: calling it trains."""

    def __call__(self, *args: Any, **kwargs: Any) -> TrainResult:
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
