"""The ``torch`` backend: runs checkpoints (Ultralytics ``.pt``, edgeseg ``.pt``/``.safetensors``)
and TorchScript exports (``.torchscript``) with PyTorch, on the CPU.

Checkpoints are fully dynamic: input ``images`` ``(1, 3, H, W)`` with H and W any multiple of 32,
so the Runtime uses the rectangular letterbox. Outputs are the raw layout: ``output0``
``(1, 4+nc+nm, N)`` float32 and ``output1`` protos ``(1, nm, H/4, W/4)``. TorchScript files have
the shape they were exported with (unless exported with ``dynamic``).

torch is imported when a model is opened, never when this module is imported.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from edgeseg.backend import Backend, TensorSpec, ensure_file, register
from edgeseg.errors import InputError, ModelLoadError

__all__ = ["TorchBackend"]


@register
class TorchBackend(Backend):
    """PyTorch backend. Options: ``fuse`` (default True: fold BatchNorm into convs, same results,
    faster), ``device`` (default ``"cpu"``)."""

    name = "torch"
    suffixes = (".pt", ".pth", ".safetensors", ".torchscript")
    requires = ("torch",)
    extra = "convert"
    priority = 50
    format = "pytorch"

    def __init__(self, model: Path, *, threads: Optional[int] = None, fuse: bool = True, device: str = "cpu", **options: Any) -> None:
        if options:
            raise InputError(f"torch backend: unknown options {sorted(options)}; expected fuse, device")
        try:
            import torch
        except ImportError as exc:
            raise self.unavailable() from exc
        model = Path(model)
        ensure_file(model, list(self.suffixes))
        if threads:
            torch.set_num_threads(int(threads))
        self._torch = torch
        self._device = torch.device(device)
        self.path = model
        if model.suffix.lower() == ".torchscript":
            self._open_torchscript(model)
        else:
            self._open_checkpoint(model, fuse)

    def _open_checkpoint(self, path: Path, fuse: bool) -> None:
        from .checkpoint import load_model

        loaded = load_model(path)
        net = loaded.model
        if fuse:
            net.fuse()
        self._net = net.to(self._device).eval()
        self._dtype = np.float32
        self.loaded = loaded
        nm = net.head.nm
        self.inputs = [TensorSpec("images", (1, 3, None, None), np.dtype(np.float32))]
        self.outputs = [
            TensorSpec("output0", (1, 4 + net.nc + nm, None), np.dtype(np.float32)),
            TensorSpec("output1", (1, nm, None, None), np.dtype(np.float32)),
        ]
        self.metadata = {
            "description": f"{loaded.arch_name} ({loaded.kind} checkpoint)",
            "task": "segment",
            "names": dict(loaded.names),
            "imgsz": list(loaded.imgsz),
            "stride": loaded.stride,
            "batch": 1,
            "output_layout": "raw",
            "quantization": "fp32",
            "source_sha256": loaded.sha256,
        }
        self._describe = {"device": str(self._device), "fused": net.fused, "checkpoint": loaded.kind, "arch": loaded.arch_name}

    def _open_torchscript(self, path: Path) -> None:
        torch = self._torch
        extra = {"config.txt": ""}
        try:
            net = torch.jit.load(str(path), map_location=self._device, _extra_files=extra)
        except Exception as exc:
            raise ModelLoadError(f"{path}: not a loadable TorchScript file ({type(exc).__name__}: {exc})") from exc
        try:
            meta = json.loads(extra["config.txt"]) if extra["config.txt"] else {}
        except (ValueError, UnicodeDecodeError):
            meta = {}
        self._net = net.eval()
        self.loaded = None
        self.metadata = meta if isinstance(meta, dict) else {}
        half = self.metadata.get("quantization") == "fp16"
        self._dtype = np.float16 if half else np.float32
        imgsz = self.metadata.get("imgsz") or [None, None]
        dynamic = bool(self.metadata.get("dynamic", False))
        h, w = (None, None) if dynamic else (int(imgsz[0]), int(imgsz[-1])) if imgsz[0] else (None, None)
        self.inputs = [TensorSpec("images", (1, 3, h, w), np.dtype(self._dtype))]
        nc = len(self.metadata.get("names") or {}) or None
        nm = self.metadata.get("mask_dim")
        self.outputs = [
            TensorSpec("output0", (1, 4 + nc + nm if nc and nm else None, None), np.dtype(self._dtype)),
            TensorSpec("output1", (1, nm, None, None), np.dtype(self._dtype)),
        ]
        self._describe = {"device": str(self._device), "torchscript": True}

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        x = feeds.get("images")
        if x is None:
            if len(feeds) != 1:
                raise InputError(f"torch backend: expected one input 'images', got {sorted(feeds)}")
            x = next(iter(feeds.values()))
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"torch backend: expected input (1, 3, H, W), got shape {x.shape}")
        stride = self.loaded.stride if self.loaded is not None else 32
        if x.shape[2] % stride or x.shape[3] % stride:
            raise InputError(f"torch backend: input height and width must be multiples of {stride}, got {x.shape[2]}x{x.shape[3]}")
        torch = self._torch
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=self._dtype)).to(self._device)
        # TorchScript's profiling executor spends its first calls re-optimizing (seconds each at
        # 640 px) without a gain on these conv nets: run the graph as traced
        with torch.inference_mode(), torch.jit.optimized_execution(False):
            out0, protos = self._net(t)
        return {"output0": out0.float().cpu().numpy(), "output1": protos.float().cpu().numpy()}

    def close(self) -> None:
        self._net = None

    def describe(self) -> Dict[str, Any]:
        return dict(self._describe)
