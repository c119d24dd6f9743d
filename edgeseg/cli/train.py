"""``edgeseg train``: train a segmentation model (the trainer lives in ``edgeseg.converters.train``).

torch is imported only when the command runs, never when this module is imported."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import click

from .common import translate_errors

INSTALL_HINT = "training needs torch: pip install 'edgeseg[convert]'"


@click.command("train")
@click.option("--data", "-d", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Dataset YAML (YOLO segmentation format) with train and val splits.")
@click.option("--model", "-m", default="yolov8n-seg", show_default=True,
              help="A scale name (yolov8n-seg, yolo11s-seg, ...; .yaml allowed) or an architecture .yaml for a new "
                   "model, or a .pt checkpoint (Ultralytics' or edgeseg's) to start from.")
@click.option("--pretrained", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Checkpoint whose tensors are copied into the model where name and shape match.")
@click.option("--epochs", type=click.IntRange(min=1), default=100, show_default=True, help="Passes over the train split.")
@click.option("--imgsz", type=click.IntRange(min=32), default=640, show_default=True,
              help="Training (and validation) size, a multiple of 32.")
@click.option("--batch", type=click.IntRange(min=1), default=16, show_default=True,
              help="Images per step, all processes together.")
@click.option("--device", default="", help="cpu, cuda, cuda:N or N (default: cuda:0 when available, else cpu).")
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True,
              help="Data-loading processes per training process.")
@click.option("--optimizer", type=click.Choice(["auto", "SGD", "AdamW"], case_sensitive=False), default="auto",
              show_default=True, help="auto: AdamW with a class-count based rate for short runs, SGD for long ones.")
@click.option("--lr0", type=float, default=0.01, show_default=True, help="Initial learning rate (ignored by auto).")
@click.option("--lrf", type=float, default=0.01, show_default=True, help="Final learning rate as a fraction of lr0.")
@click.option("--cos-lr", is_flag=True, help="Cosine instead of linear learning-rate decay.")
@click.option("--warmup-epochs", type=click.FloatRange(min=0), default=3.0, show_default=True,
              help="Linear learning-rate warmup (at least 100 steps when > 0; 0: none).")
@click.option("--patience", type=click.IntRange(min=1), default=100, show_default=True,
              help="Stop after this many epochs without a better fitness.")
@click.option("--close-mosaic", type=click.IntRange(min=0), default=10, show_default=True,
              help="Turn mosaic off for the last N epochs.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (weights, shuffling, augmentation).")
@click.option("--val/--no-val", default=True, show_default=True,
              help="Validate the EMA weights after every epoch (box and mask mAP).")
@click.option("--project", default="runs/train", show_default=True, help="Folder of runs.")
@click.option("--name", default="exp", show_default=True, help="Run name: results in PROJECT/NAME (NAME2, ... if taken).")
@click.option("--exist-ok", is_flag=True, help="Reuse PROJECT/NAME if it exists.")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Training processes on this machine (DistributedDataParallel: gloo on CPU, NCCL on CUDA).")
@click.option("--resume", is_flag=False, flag_value="", default=None, metavar="[LAST.PT]",
              help="Continue a run exactly: a last.pt or run folder (alone: PROJECT/NAME of this command).")
@click.option("--max-batches", type=click.IntRange(min=0), default=0, help="Stop every epoch after N batches (quick checks).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or per-epoch lines.")
@translate_errors
def train(data: Optional[Path], resume: Optional[str], quiet: bool, **opts: Any) -> None:
    """Train a YOLO segmentation model: new, fine-tuned, or with transferred weights.

    Writes PROJECT/NAME/weights/last.pt (full training state, after every epoch and on
    Ctrl-C), weights/best.pt, results.csv and results.png. Both .pt files are edgeseg
    checkpoints that `edgeseg val`, `predict` and `convert` read.

    \b
    Examples:
      edgeseg data synth --out synth/ --images 500
      edgeseg train --data synth/synth.yaml --model yolov8n-seg --epochs 30 --imgsz 320
      edgeseg train --data coco8-seg.yaml --model yolov8n-seg.pt --epochs 3 --imgsz 320 --batch 4
      edgeseg train --data my.yaml --model yolo11n-seg.yaml --pretrained yolo11n-seg.pt
      edgeseg train --resume runs/train/exp/weights/last.pt
      edgeseg train --data my.yaml --nproc 2 --device cpu
      torchrun --nproc_per_node 2 -m edgeseg.converters.train --data my.yaml   # also --nnodes/--rdzv-endpoint
    """
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise click.ClickException(INSTALL_HINT) from exc
    from ..converters.train import train as run

    opts["verbose"] = not quiet
    opts["optimizer"] = {"auto": "auto", "sgd": "SGD", "adamw": "AdamW"}[opts["optimizer"].lower()]
    if resume is not None:
        target = resume or str(Path(opts["project"]) / opts["name"])
        result = run(resume=target, device=opts["device"], workers=opts["workers"], nproc=opts["nproc"],
                     verbose=not quiet)
    else:
        if data is None:
            raise click.UsageError("--data is required (a dataset YAML), unless you --resume a run")
        for key in ("pretrained",):
            opts[key] = str(opts[key]) if opts[key] else None
        result = run(data=str(data), **opts)
    import os

    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 reports
        return
    click.echo(f"{result.stopped}: best epoch {result.best_epoch} -> {result.best}; last: {result.last}; "
               f"results: {result.results_csv}")
