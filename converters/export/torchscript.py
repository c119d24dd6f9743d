"""TorchScript: ``<name>.torchscript``, traced; metadata as JSON in ``_extra_files["config.txt"]``
(Ultralytics' place). Runs on the torch backend (for comparing, not for devices). ``half`` traces in
fp16: fp16 input and outputs."""
from __future__ import annotations

import json

from .registry import DYNAMIC, HALF, Exporter, ExportJob

__all__ = ["EXPORTER", "export_torchscript"]


def export_torchscript(job: ExportJob) -> None:
    """Trace to TorchScript at ``job.path``."""
    import torch

    net, im = (job.net.half(), job.im.half()) if job.options["half"] else (job.net, job.im)
    with job.stage("torch.jit.trace"):
        ts = torch.jit.trace(net, im, strict=False, check_trace=False)
    with job.stage("write TorchScript"):
        ts.save(str(job.path), _extra_files={"config.txt": json.dumps(job.meta)})


EXPORTER = Exporter(
    name="torchscript",
    title="TorchScript",
    suffix=".torchscript",
    description="TorchScript file (torch.jit.load; the torch backend runs it)",
    contents="one file",
    export=export_torchscript,
    options=(HALF, DYNAMIC),
    backend="torch",
    bench=False,  # bench runs the checkpoint itself on the torch backend
    stages=2,
    order=90,
)
