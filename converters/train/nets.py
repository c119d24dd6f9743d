"""The model side of training: the three starts, weight transfer, the training forward, EMA.

Starts (``model`` argument of :func:`build_model`):

* a description: a scale name (``yolov8n-seg``, ``yolo11s-seg``, also with ``.yaml``), an
  architecture YAML file in the Ultralytics shape, or an architecture dict — new weights;
* a checkpoint (``.pt``/``.safetensors``, Ultralytics' or ours) — its weights (when its class
  count differs from the dataset's, the same architecture is rebuilt and every tensor whose
  name and shape still fit is transferred);
* either of them plus ``pretrained``: a checkpoint whose matching tensors are copied in.
"""
from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch
from torch import nn

from edgeseg.errors import ModelLoadError

from ..arch import architecture
from ..checkpoint import CHECKPOINT_SUFFIXES, load_model
from ..model import SegmentationModel
from .loss import head_outputs

__all__ = ["build_model", "transfer", "TrainNet", "ModelEMA", "param_groups"]

_SCALE_NAME = re.compile(r"^(yolov8|yolo11)([nslmx])-seg(?:\.ya?ml)?$")


def _description(spec: Any, nc: int) -> Dict[str, Any]:
    """An architecture dict for a scale name, a YAML file or a dict, with ``nc`` classes."""
    if isinstance(spec, dict):
        arch = copy.deepcopy(spec)
    elif Path(str(spec)).suffix.lower() in (".yaml", ".yml") and Path(str(spec)).is_file():
        import yaml

        try:
            arch = yaml.safe_load(Path(spec).read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ModelLoadError(f"{spec}: not a valid architecture YAML ({exc})") from exc
        if not isinstance(arch, dict) or "backbone" not in arch or "head" not in arch:
            raise ModelLoadError(f"{spec}: expected an architecture YAML with 'backbone' and 'head' lists")
        if not arch.get("scale") and arch.get("scales"):
            m = re.search(r"yolo(?:v8|11)([nslmx])", Path(spec).stem)
            arch["scale"] = m.group(1) if m and m.group(1) in arch["scales"] else next(iter(arch["scales"]))
    else:
        m = _SCALE_NAME.match(Path(str(spec)).name)
        if not m:
            raise ModelLoadError(
                f"model {spec!r}: expected a scale name such as yolov8n-seg or yolo11s-seg (optionally .yaml), an "
                f"architecture .yaml file, or a checkpoint ({', '.join(CHECKPOINT_SUFFIXES)})")
        arch = architecture(f"{m.group(1)}-seg", m.group(2), nc)
    arch["nc"] = int(nc)
    return arch


def bias_init(model: SegmentationModel) -> None:
    """Ultralytics' head bias prior: box sides start near 1 bin, classes at ~5 objects per 640 px image."""
    head = model.head
    with torch.no_grad():
        for box, cls, s in zip(head.cv2, head.cv3, head.strides):
            box[-1].bias.fill_(1.0)
            cls[-1].bias.fill_(math.log(5 / head.nc / (640 / s) ** 2))


def transfer(model: nn.Module, state: Dict[str, torch.Tensor]) -> Tuple[int, int]:
    """Copy the tensors of ``state`` whose name and shape match; returns (copied, model's total)."""
    own = model.state_dict()
    fit = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in fit.items()}, strict=False)
    return len(fit), len(own)


def _is_checkpoint(spec: Any) -> bool:
    return not isinstance(spec, dict) and Path(str(spec)).suffix.lower() in CHECKPOINT_SUFFIXES


def build_model(spec: Any, names: Dict[int, str], pretrained: Any = None) -> Tuple[SegmentationModel, List[str]]:
    """The model to train and what was done to get it (lines for the log). See the module docstring."""
    nc = len(names)
    notes: List[str] = []
    if _is_checkpoint(spec):
        loaded = load_model(spec)
        if loaded.model.nc == nc:
            model = loaded.model
            model.names = dict(names)
            notes.append(f"weights from {spec} ({loaded.kind} checkpoint, {loaded.arch_name})")
        else:
            model = SegmentationModel({**loaded.model.arch, "nc": nc}, names)
            bias_init(model)
            n, total = transfer(model, loaded.model.state_dict())
            notes.append(f"{spec} has {loaded.model.nc} classes, the dataset {nc}: rebuilt {loaded.arch_name} with "
                         f"{nc} classes, transferred {n}/{total} tensors")
    else:
        model = SegmentationModel(_description(spec, nc), names)
        bias_init(model)
        notes.append(f"new model from {spec if not isinstance(spec, dict) else 'an architecture dict'}")
    if pretrained:
        if not _is_checkpoint(pretrained):
            raise ModelLoadError(f"pretrained must be a checkpoint ({', '.join(CHECKPOINT_SUFFIXES)}), got {pretrained!r}")
        n, total = transfer(model, load_model(pretrained).model.state_dict())
        notes.append(f"transferred {n}/{total} tensors from {pretrained} (matched by name and shape)")
    return model.float(), notes


def folded_batchnorms(model: nn.Module) -> List[nn.BatchNorm2d]:
    """BatchNorm layers that are a pass-through for weights folded in elsewhere: running mean 0,
    running variance ``1 - eps`` and scale 1 (a model rebuilt from a fused or exported graph, such
    as a checkpoint made from an ONNX file). Training them in train mode would normalize by batch
    statistics the weights were never made for, so the trainer keeps them in eval mode."""
    out = []
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None and m.running_var is not None:
            if (torch.all(m.running_mean == 0) and torch.allclose(m.running_var + m.eps, torch.ones_like(m.running_var))
                    and (m.weight is None or torch.all(m.weight == 1))):
                out.append(m)
    return out


class TrainNet(nn.Module):
    """Training forward of a :class:`SegmentationModel`: the layers, then the head's raw outputs
    (:func:`~.loss.head_outputs`) instead of decoded boxes. DDP wraps this module."""

    def __init__(self, model: SegmentationModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        outputs: List[Any] = []
        layers = self.model.model
        for m in layers[:-1]:
            if m.f != -1:
                x = outputs[m.f] if isinstance(m.f, int) else [x if j == -1 else outputs[j] for j in m.f]
            x = m(x)
            outputs.append(x if m.i in self.model.save else None)
        head = layers[-1]
        return head_outputs(head, [outputs[j] for j in head.f])


class ModelEMA:
    """Exponential moving average of the weights (and BatchNorm statistics); the decay ramps up
    as ``decay * (1 - exp(-updates / tau))`` so early averages follow the model closely."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0) -> None:
        self.ema = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, updates

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        state = model.state_dict()
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(state[k].detach().to(v.dtype), alpha=1 - d)
            else:
                v.copy_(state[k])


def param_groups(model: nn.Module) -> Dict[str, List[nn.Parameter]]:
    """Parameters split into ``bias`` (no decay), ``norm`` weights (no decay) and ``weight`` (decay)."""
    groups: Dict[str, List[nn.Parameter]] = {"bias": [], "weight": [], "norm": []}
    norms = (nn.BatchNorm2d, nn.BatchNorm1d, nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm2d)
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if name == "bias":
                groups["bias"].append(p)
            elif isinstance(module, norms):
                groups["norm"].append(p)
            else:
                groups["weight"].append(p)
    return groups
