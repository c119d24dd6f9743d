"""The training loop. Read it top to bottom: config, setup, schedule, one epoch, checkpoints.

    from edgeseg.converters import train
    train(data="coco8-seg.yaml", model="yolov8n-seg", epochs=3, imgsz=320, batch=4)
    train(data="synth/synth.yaml", model="yolo11n-seg.yaml", pretrained="yolo11n-seg.pt")
    train(resume="runs/train/exp/weights/last.pt")

Outputs (the Ultralytics run layout): ``PROJECT/NAME/weights/last.pt`` (EMA weights plus the full
training state, rewritten atomically after every epoch and on Ctrl-C), ``weights/best.pt`` (the
EMA weights of the best epoch), ``results.csv`` (one row per epoch) and ``results.png``. Both
``.pt`` files are edgeseg checkpoints: ``load_model``, ``Runtime``, ``edgeseg val`` and
``edgeseg convert`` read them.

Several processes: ``train(..., nproc=2)`` or ``torchrun --nproc_per_node 2 -m
edgeseg.converters.train --data ...``: DistributedDataParallel over gloo (CPU) or NCCL (CUDA);
``batch`` is the total over all processes, rank 0 logs and writes.
"""
from __future__ import annotations

import csv
import datetime
import math
import os
import signal
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist

from edgeseg.errors import DatasetError, InputError
from edgeseg.io import atomic_write

from ..checkpoint import LoadedModel
from .data import Augment, SegDataset, build_loader
from .loss import LossGains, SegLoss
from .nets import ModelEMA, TrainNet, build_model, folded_batchnorms, param_groups

__all__ = ["TrainConfig", "TrainResult", "train"]

LOSS_NAMES = ("box_loss", "seg_loss", "cls_loss", "dfl_loss")


@dataclass
class TrainConfig:
    """Every setting of a run (saved in its checkpoints; ``resume`` reads them back)."""

    data: str = ""  # dataset YAML (YOLO segmentation format), with train and val splits
    model: Any = "yolov8n-seg"  # scale name / architecture .yaml / dict (new), or a .pt checkpoint
    pretrained: Optional[str] = None  # checkpoint whose tensors are copied in by name and shape
    epochs: int = 100
    imgsz: int = 640  # square training size, a multiple of 32
    batch: int = 16  # images per step, all processes together
    device: str = ""  # "" (cuda:0 if available, else cpu), "cpu", "cuda", "0"
    workers: int = 2  # data-loading processes per training process (0: in the training process)
    optimizer: str = "auto"  # auto (AdamW for short runs, SGD for long ones) | SGD | AdamW
    lr0: float = 0.01  # initial learning rate (auto picks its own)
    lrf: float = 0.01  # final learning rate = lr0 * lrf
    cos_lr: bool = False  # cosine instead of linear decay
    momentum: float = 0.937  # SGD momentum / Adam beta1
    weight_decay: float = 5e-4  # on conv weights only (not norms, not biases), scaled by batch/nbs
    warmup_epochs: float = 3.0  # linear warmup (at least 100 steps when > 0)
    warmup_momentum: float = 0.8
    warmup_bias_lr: float = 0.1
    nbs: int = 64  # nominal batch size: gradients accumulate over about this many images
    clip_grad: float = 10.0  # max gradient norm
    amp: bool = True  # mixed precision on CUDA (never on CPU)
    patience: int = 100  # stop after this many epochs without a better fitness
    close_mosaic: int = 10  # no mosaic in the last N epochs
    seed: int = 0
    val: bool = True  # validate the EMA model after every epoch (else: fitness = -train loss)
    project: str = "runs/train"
    name: str = "exp"
    exist_ok: bool = False  # reuse PROJECT/NAME instead of making NAME2, NAME3, ...
    nproc: int = 1  # training processes on this machine (DDP)
    max_batches: int = 0  # stop each epoch after this many batches (0: all; quick runs and benchmarks)
    verbose: bool = True
    augment: Dict[str, float] = field(default_factory=lambda: asdict(Augment()))
    gains: Dict[str, float] = field(default_factory=lambda: asdict(LossGains()))


@dataclass
class TrainResult:
    """What a run left: its folder, checkpoints, per-epoch rows and the best epoch."""

    save_dir: Path
    last: Path
    best: Path
    results_csv: Path
    rows: List[Dict[str, float]]
    best_epoch: int
    best_fitness: float
    stopped: str  # "done", "patience" or "interrupted"


# --------------------------------------------------------------------------- setup


def _dist() -> tuple:
    """(rank, local rank, world size) from torchrun's environment."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _device(spec: str, local_rank: int) -> torch.device:
    spec = str(spec or "").strip().lower()
    if spec in ("", "auto"):
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.isdigit():
        spec = f"cuda:{spec}"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"device {spec!r}: CUDA is not available here (torch {torch.__version__}); use --device cpu")
        return torch.device("cuda", local_rank if spec == "cuda" else int(spec.split(":")[1]) + local_rank)
    if spec != "cpu":
        raise InputError(f"device: expected cpu, cuda, cuda:N or N, got {spec!r}")
    return torch.device("cpu")


def _run_dir(cfg: TrainConfig) -> Path:
    base = Path(cfg.project) / cfg.name
    if cfg.exist_ok or not base.exists():
        return base
    n = 2
    while (base.parent / f"{base.name}{n}").exists():
        n += 1
    return base.parent / f"{base.name}{n}"


def _jsonable(cfg: TrainConfig) -> Dict[str, Any]:
    d = asdict(cfg)
    for k in ("data", "model", "pretrained", "project"):
        if isinstance(d[k], Path):
            d[k] = str(d[k])
    return d


def _optimizer(cfg: TrainConfig, model: torch.nn.Module, nc: int, n_images: int, accumulate: int,
               log: Any) -> torch.optim.Optimizer:
    """Param groups (``bias``: no decay, ``weight``: decay, ``norm``: no decay) and the optimizer."""
    name, lr, momentum = cfg.optimizer, cfg.lr0, cfg.momentum
    if name.lower() == "auto":
        steps = math.ceil(max(n_images, cfg.nbs) / max(cfg.batch, cfg.nbs)) * cfg.epochs
        name, lr, momentum = ("SGD", 0.01, 0.9) if steps > 10000 else ("AdamW", round(0.002 * 5 / (4 + nc), 6), 0.9)
        cfg.warmup_bias_lr = 0.0 if name == "AdamW" else cfg.warmup_bias_lr
        log(f"optimizer: auto -> {name} (lr={lr:g}, momentum={momentum:g}) for about {steps} steps; "
            "pass --optimizer and --lr0 to choose them")
        cfg.optimizer, cfg.lr0, cfg.momentum = name, lr, momentum
    groups = param_groups(model)
    decay = cfg.weight_decay * cfg.batch * accumulate / cfg.nbs
    if name == "SGD":
        opt: torch.optim.Optimizer = torch.optim.SGD(groups["bias"], lr=lr, momentum=momentum, nesterov=True)
    elif name == "AdamW":
        opt = torch.optim.AdamW(groups["bias"], lr=lr, betas=(momentum, 0.999), weight_decay=0.0)
    else:
        raise InputError(f"optimizer: expected auto, SGD or AdamW, got {cfg.optimizer!r}")
    opt.param_groups[0]["name"] = "bias"
    opt.add_param_group({"params": groups["weight"], "weight_decay": decay, "name": "weight"})
    opt.add_param_group({"params": groups["norm"], "weight_decay": 0.0, "name": "norm"})
    return opt


# --------------------------------------------------------------------------- schedule


def lr_factor(cfg: TrainConfig, epoch: int) -> float:
    """Learning-rate multiplier of an epoch: linear (or cosine) from 1 down to ``lrf``."""
    x = epoch / max(cfg.epochs, 1)
    if cfg.cos_lr:
        return ((1 - math.cos(x * math.pi)) / 2) * (cfg.lrf - 1) + 1
    return max(1 - x, 0) * (1 - cfg.lrf) + cfg.lrf


def set_lr(cfg: TrainConfig, opt: torch.optim.Optimizer, ni: int, epoch: int, warmup: int) -> None:
    """The learning rate (and SGD momentum) of global step ``ni``: warm up over ``warmup``
    steps from ``warmup_bias_lr`` (biases) or 0 (the rest) to the epoch's rate, then hold it."""
    target = cfg.lr0 * lr_factor(cfg, epoch)
    for g in opt.param_groups:
        if ni < warmup:
            start = cfg.warmup_bias_lr if g["name"] == "bias" else 0.0
            g["lr"] = float(np.interp(ni, [0, warmup], [start, target]))
            if "momentum" in g:
                g["momentum"] = float(np.interp(ni, [0, warmup], [cfg.warmup_momentum, cfg.momentum]))
        else:
            g["lr"] = target
            if "momentum" in g:
                g["momentum"] = cfg.momentum


def accumulation(cfg: TrainConfig, ni: int, warmup: int) -> int:
    """Batches per optimizer step: ramps from 1 to ``nbs / batch`` during warmup."""
    full = max(round(cfg.nbs / cfg.batch), 1)
    if ni < warmup:
        return max(1, int(np.interp(ni, [0, warmup], [1, cfg.nbs / cfg.batch]).round()))
    return full


# --------------------------------------------------------------------------- checkpoints and results


def _config_of(model: torch.nn.Module, imgsz: int) -> Dict[str, Any]:
    """The edgeseg checkpoint config of a model (see :mod:`..checkpoint`)."""
    return LoadedModel(model, model.names, (imgsz, imgsz), Path("."), "", "edgeseg").config()


def _save(path: Path, ema: ModelEMA, imgsz: int, train_state: Dict[str, Any]) -> None:
    """An edgeseg checkpoint (EMA weights, float32) plus ``train_state``, written atomically."""
    state = {k: v.detach().float().cpu().clone() if v.is_floating_point() else v.cpu().clone()
             for k, v in ema.ema.state_dict().items()}
    with atomic_write(path) as tmp:
        torch.save({"edgeseg": _config_of(ema.ema, imgsz), "state_dict": state, "train": train_state}, tmp)


def _write_csv(path: Path, rows: List[Dict[str, float]]) -> None:
    if not rows:
        return
    keys = list(rows[0])
    with atomic_write(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(keys)
            for r in rows:
                w.writerow([r["epoch"]] + [f"{r[k]:.6g}" for k in keys[1:]])


def _validate(cfg: TrainConfig, ema: ModelEMA) -> Dict[str, float]:
    """Box and mask metrics of the EMA model through the torch backend and edgeseg's own val."""
    from edgeseg.eval.validate import validate
    from edgeseg.runtime import Runtime

    with tempfile.TemporaryDirectory(prefix="edgeseg-val-") as d:
        path = Path(d) / "ema.pt"
        _save(path, ema, cfg.imgsz, {})
        with Runtime(path, backend="torch", imgsz=cfg.imgsz, conf=0.001, iou=0.7) as rt:
            m = validate(rt, cfg.data, split="val", progress=cfg.verbose)
    out: Dict[str, float] = {}
    for tag, res in (("B", m.box), ("M", m.seg)):
        if res is not None:
            out.update({f"metrics/precision({tag})": res.mp, f"metrics/recall({tag})": res.mr,
                        f"metrics/mAP50({tag})": res.map50, f"metrics/mAP50-95({tag})": res.map})
    return out


def fitness(row: Dict[str, float]) -> float:
    """0.1 * mAP50 + 0.9 * mAP50-95, box plus mask (or minus the train loss without validation)."""
    if "metrics/mAP50-95(B)" not in row:
        return -sum(row[f"train/{k}"] for k in LOSS_NAMES)
    f = 0.0
    for tag in ("B", "M"):
        if f"metrics/mAP50-95({tag})" in row:
            f += 0.1 * row[f"metrics/mAP50({tag})"] + 0.9 * row[f"metrics/mAP50-95({tag})"]
    return f


# --------------------------------------------------------------------------- the run


class _Stop:
    """Ctrl-C sets a flag that the loop reads between steps (a second Ctrl-C interrupts at once)."""

    def __init__(self) -> None:
        self.flag = False
        self._old: Any = None

    def __enter__(self) -> "_Stop":
        try:
            self._old = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread: no handler, Ctrl-C behaves as usual
            self._old = None
        return self

    def _handler(self, *_: Any) -> None:
        self.flag = True
        signal.signal(signal.SIGINT, self._old or signal.default_int_handler)

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def train(cfg: Optional[TrainConfig] = None, resume: Optional[str] = None, **kwargs: Any) -> TrainResult:
    """Train a segmentation model (see the module docstring; every keyword is a
    :class:`TrainConfig` field). ``resume``: a run's ``last.pt`` (or its run folder) to continue
    exactly where it stopped; its saved settings are used (``device``, ``workers``, ``nproc``,
    ``verbose`` may be given anew)."""
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise InputError(f"train: unknown settings {unknown}; expected some of {sorted(known)}")
    ckpt = None
    if resume:
        ckpt_path = Path(resume)
        if ckpt_path.is_dir():
            ckpt_path = ckpt_path / "weights" / "last.pt"
        ckpt = _read_resume(ckpt_path)
        saved = {k: v for k, v in ckpt["train"]["args"].items() if k in known}
        cfg = TrainConfig(**{**saved, **{k: v for k, v in kwargs.items() if k in ("device", "workers", "nproc", "verbose")}})
        cfg.project, cfg.name, cfg.exist_ok = str(ckpt_path.parent.parent.parent), ckpt_path.parent.parent.name, True
    else:
        cfg = TrainConfig(**{**(asdict(cfg) if cfg else {}), **kwargs})
    if not cfg.data:
        raise InputError("train: a dataset is needed (data='dataset.yaml')")
    for name in ("epochs", "imgsz", "batch", "nproc"):
        if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) < 1:
            raise InputError(f"{name} must be a positive integer, got {getattr(cfg, name)!r}")
    if cfg.imgsz % 32:
        raise InputError(f"imgsz must be a multiple of 32 (the model's largest stride), got {cfg.imgsz}")
    rank, _, world = _dist()
    if cfg.nproc > 1 and world == 1:
        return _spawn(cfg, resume)
    return _train(cfg, ckpt, resume)


def _read_resume(path: Path) -> Dict[str, Any]:
    if not path.is_file():
        raise InputError(f"resume: {path} not found (expected a run's weights/last.pt)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"resume: {path} is not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    state = ckpt.get("train") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or "optimizer" not in state:
        raise InputError(f"resume: {path} holds no training state (expected the last.pt of an edgeseg train run; "
                         "best.pt and exported models cannot be resumed; start a new run with --model instead)")
    if state["epoch"] >= state["args"]["epochs"] or state.get("stopped") == "patience":
        raise InputError(f"resume: the run in {path.parent.parent} already finished ({state['epoch']} of "
                         f"{state['args']['epochs']} epochs); start a new run with --model {path} to train further")
    return ckpt


def _spawn(cfg: TrainConfig, resume: Optional[str]) -> TrainResult:
    """Run ``cfg.nproc`` processes on this machine (torch.multiprocessing, a free local port)."""
    import torch.multiprocessing as mp

    save_dir = _run_dir(cfg) if not resume else Path(cfg.project) / cfg.name
    cfg.project, cfg.name, cfg.exist_ok = str(save_dir.parent), save_dir.name, True  # every rank: the same folder
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_spawned, args=(asdict(cfg), resume, port, cfg.nproc), nprocs=cfg.nproc, start_method="spawn")
    return _result_of(save_dir)


def _spawned(rank: int, cfg: Dict[str, Any], resume: Optional[str], port: int, world: int) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    threads = max(1, (os.cpu_count() or 1) // world)
    torch.set_num_threads(min(torch.get_num_threads(), threads))
    if resume:
        train(resume=resume, device=cfg["device"], workers=cfg["workers"], verbose=cfg["verbose"], nproc=world)
    else:
        train(TrainConfig(**cfg))


def _result_of(save_dir: Path) -> TrainResult:
    last = save_dir / "weights" / "last.pt"
    state = torch.load(last, map_location="cpu", weights_only=True)["train"]
    return TrainResult(save_dir, last, save_dir / "weights" / "best.pt", save_dir / "results.csv", state["rows"],
                       state["best_epoch"], state["best_fitness"], state.get("stopped", "done"))


def _train(cfg: TrainConfig, ckpt: Optional[Dict[str, Any]], resume: Optional[str]) -> TrainResult:
    rank, local_rank, world = _dist()
    device = _device(cfg.device, local_rank)
    ddp = world > 1
    if ddp and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    main = rank == 0
    log = print if (main and cfg.verbose) else (lambda *a, **k: None)
    if cfg.batch % world:
        raise InputError(f"batch {cfg.batch} must be divisible by the {world} processes")
    torch.manual_seed(cfg.seed)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    save_dir = Path(cfg.project) / cfg.name if ckpt else _run_dir(cfg)
    if ddp:  # every rank writes nothing, but all agree on the folder rank 0 picked
        box = [str(save_dir)]
        dist.broadcast_object_list(box, 0)
        save_dir = Path(box[0])
    weights = save_dir / "weights"
    if main:
        weights.mkdir(parents=True, exist_ok=True)

    # data: the train split augmented, every rank its share of each epoch's permutation
    dataset = SegDataset(cfg.data, "train", cfg.imgsz, augment=True, hyp=Augment(**cfg.augment), seed=cfg.seed)
    if cfg.val:
        from edgeseg.eval.datasets import load_dataset

        load_dataset(cfg.data, split="val")  # fail now, not after the first epoch
    for issue in dataset.issues[:10]:
        log(f"skipped label: {issue}")
    loader, sampler = build_loader(dataset, cfg.batch // world, cfg.workers, rank, world, cfg.seed)
    nb = math.ceil(len(sampler) / (cfg.batch // world))
    if cfg.max_batches:
        nb = min(nb, cfg.max_batches)

    # model, optimizer, EMA (fresh, or all three from the checkpoint)
    if ckpt:
        model, _ = build_model(weights / "last.pt", dataset.names)  # its architecture; weights follow below
    else:
        model, notes = build_model(cfg.model, dataset.names, cfg.pretrained)
        for n in notes:
            log(n)
    model = model.to(device).train()
    accumulate = max(round(cfg.nbs / cfg.batch), 1)
    opt = _optimizer(cfg, model, len(dataset.names), len(dataset), accumulate, log if not ckpt else (lambda *_: None))
    ema = ModelEMA(model)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp and device.type == "cuda")
    start_epoch, start_batch, last_opt_step, rows = 0, 0, -1, []
    best_fitness, best_epoch, tsum = -math.inf, -1, torch.zeros(4)
    if ckpt:
        st = ckpt["train"]
        model.load_state_dict(st["model"])
        ema.ema.load_state_dict({k: v.to(device) for k, v in ckpt["state_dict"].items()})
        ema.ema.to(device)
        ema.updates = st["ema_updates"]
        opt.load_state_dict(st["optimizer"])
        if st.get("scaler"):
            scaler.load_state_dict(st["scaler"])
        start_epoch, start_batch, last_opt_step = st["epoch"], st["batch"], st["last_opt_step"]
        best_fitness, best_epoch, rows, tsum = st["best_fitness"], st["best_epoch"], st["rows"], st["tsum"]
        torch.set_rng_state(st["rng"])
        log(f"resuming {save_dir} at epoch {start_epoch + 1}" + (f", batch {start_batch + 1}" if start_batch else ""))
    folded = folded_batchnorms(model)
    if folded:
        log(f"{len(folded)} of {sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())} BatchNorm layers "
            "hold folded weights (mean 0, variance 1): kept fixed (eval mode) while training")
    net = TrainNet(model)
    if ddp:
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    criterion = SegLoss(model.head, LossGains(**cfg.gains))
    warmup = max(round(cfg.warmup_epochs * nb), 100) if cfg.warmup_epochs > 0 else 0
    log(f"train: {len(dataset)} images, {dataset.num_instances} objects, {len(dataset.names)} classes; "
        f"{cfg.epochs} epochs at {cfg.imgsz} px, batch {cfg.batch} ({world} process{'es' if world > 1 else ''}, "
        f"{cfg.workers} workers each) on {device}; results in {save_dir}")

    def state(epoch: int, batch: int, stopped: str = "") -> Dict[str, Any]:
        return {"epoch": epoch, "batch": batch, "last_opt_step": last_opt_step, "model": _cpu(model.state_dict()),
                "optimizer": opt.state_dict(), "scaler": scaler.state_dict(), "ema_updates": ema.updates,
                "best_fitness": best_fitness, "best_epoch": best_epoch, "rows": rows, "tsum": tsum.clone(),
                "rng": torch.get_rng_state(), "args": _jsonable(cfg), "stopped": stopped,
                "date": datetime.datetime.now().isoformat(timespec="seconds")}

    stopped = "done"
    with _Stop() as stop:
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.time()
            mosaic = epoch < cfg.epochs - cfg.close_mosaic
            if epoch == cfg.epochs - cfg.close_mosaic and cfg.close_mosaic:
                log(f"closing mosaic for the last {cfg.close_mosaic} epochs")
            first = start_batch if epoch == start_epoch else 0
            sampler.set_epoch(epoch)
            sampler.start, sampler.mosaic = first * (cfg.batch // world), mosaic
            if first == 0:
                tsum = torch.zeros(4)
            net.train()
            for m in folded:
                m.eval()
            bar = _bar(main and cfg.verbose, nb, first, f"{epoch + 1}/{cfg.epochs}")
            interrupted = False
            for i, batch in enumerate(loader, start=first):
                if i >= nb:
                    break
                ni = i + nb * epoch
                set_lr(cfg, opt, ni, epoch, warmup)
                acc = accumulation(cfg, ni, warmup)
                imgs = batch["img"].to(device, non_blocking=True).float() / 255
                with torch.autocast(device.type, enabled=scaler.is_enabled()):
                    loss, items = criterion(net(imgs), batch)
                scaler.scale(loss * world).backward()
                if ni - last_opt_step >= acc:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=cfg.clip_grad)
                    scaler.step(opt)
                    scaler.update()
                    opt.zero_grad(set_to_none=True)
                    ema.update(model)
                    last_opt_step = ni
                tsum += items.cpu()
                mean = tsum / (i + 1)
                bar.set_postfix_str(" ".join(f"{n[:3]}={v:.3f}" for n, v in zip(LOSS_NAMES, mean.tolist()))
                                    + f" obj={len(batch['cls'])}")
                bar.update(1)
                if _any(stop.flag, ddp, device):
                    interrupted = True
                    break
            bar.close()
            if interrupted:
                if main:
                    _save(weights / "last.pt", ema, cfg.imgsz, state(epoch, i + 1, "interrupted"))
                    print(f"interrupted: {weights / 'last.pt'} holds epoch {epoch + 1}, batch {i + 1}; "
                          f"continue with: edgeseg train --resume {weights / 'last.pt'}")
                stopped = "interrupted"
                break
            # end of epoch: metrics, results.csv, last.pt / best.pt (rank 0)
            stop_now = torch.zeros(1, device=device)
            if ddp:  # the epoch's losses averaged over all processes
                tsum = tsum.to(device)
                dist.all_reduce(tsum)
                tsum = tsum.cpu() / world
            if main:
                row: Dict[str, float] = {"epoch": epoch + 1}
                row.update({f"train/{n}": v for n, v in zip(LOSS_NAMES, (tsum / max(nb, 1)).tolist())})
                if cfg.val:
                    row.update(_validate(cfg, ema))
                row.update({f"lr/pg{k}": g["lr"] for k, g in enumerate(opt.param_groups)})
                row["time"] = time.time() - t0
                rows.append(row)
                f = fitness(row)
                if f > best_fitness:
                    best_fitness, best_epoch = f, epoch + 1
                done = epoch + 1 >= cfg.epochs or epoch + 1 - best_epoch >= cfg.patience
                reason = "" if not done else "patience" if epoch + 1 < cfg.epochs else "done"
                _save(weights / "last.pt", ema, cfg.imgsz, state(epoch + 1, 0, reason))
                if best_epoch == epoch + 1:
                    _save(weights / "best.pt", ema, cfg.imgsz,
                          {"epoch": epoch + 1, "best_fitness": f, "args": _jsonable(cfg), "metrics": row})
                _write_csv(save_dir / "results.csv", rows)
                _plot(save_dir / "results.png", rows)
                log(_summary(row))
                if reason == "patience":
                    log(f"stopping early: no better fitness in the last {cfg.patience} epochs "
                        f"(best: epoch {best_epoch}); best.pt holds it")
                    stopped = "patience"
                    stop_now += 1
            if ddp:
                dist.broadcast(stop_now, 0)
            if stop_now.item():
                stopped = "patience"
                break
    if ddp:
        dist.barrier()
        dist.destroy_process_group()
    log(f"{stopped}: {len(rows)} epochs; best epoch {best_epoch} (fitness {best_fitness:.4f}); "
        f"weights in {weights}")
    return TrainResult(save_dir, weights / "last.pt", weights / "best.pt", save_dir / "results.csv", rows,
                       best_epoch, best_fitness, stopped)


def _cpu(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def _any(flag: bool, ddp: bool, device: torch.device) -> bool:
    """True when any process was asked to stop (so all ranks leave the loop at the same step)."""
    if not ddp:
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t)
    return bool(t.item())


def _bar(enabled: bool, total: int, initial: int, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=f"epoch {desc}", unit="batch", disable=not enabled,
                leave=False, dynamic_ncols=True)


def _summary(row: Dict[str, float]) -> str:
    s = f"epoch {int(row['epoch'])}: " + " ".join(f"{n}={row['train/' + n]:.4f}" for n in LOSS_NAMES)
    for tag, what in (("B", "box"), ("M", "mask")):
        if f"metrics/mAP50({tag})" in row:
            s += f"  {what} mAP50={row[f'metrics/mAP50({tag})']:.3f} mAP50-95={row[f'metrics/mAP50-95({tag})']:.3f}"
    return s + f"  ({row['time']:.1f} s)"


def _plot(path: Path, rows: List[Dict[str, float]]) -> None:
    """results.png: one small panel per column of results.csv (drawn with OpenCV, no matplotlib needed)."""
    import cv2

    keys = [k for k in rows[0] if k not in ("epoch", "time")]
    cols, pw, ph = 5, 240, 160
    grid = np.full((ph * math.ceil(len(keys) / cols), pw * cols, 3), 255, np.uint8)
    x = np.array([r["epoch"] for r in rows], np.float64)
    for n, k in enumerate(keys):
        y = np.array([r[k] for r in rows], np.float64)
        ox, oy = (n % cols) * pw, (n // cols) * ph
        cv2.putText(grid, k[:30], (ox + 6, oy + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        ok = np.isfinite(y)
        if ok.sum() == 0:
            continue
        lo, hi = float(y[ok].min()), float(y[ok].max())
        span_x = max(x.max() - x.min(), 1)
        px = ox + 10 + (x - x.min()) / span_x * (pw - 20)
        py = oy + ph - 12 - (y - lo) / max(hi - lo, 1e-12) * (ph - 40)
        pts = np.stack([px, py], 1)[ok].round().astype(np.int32)
        cv2.polylines(grid, [pts], False, (200, 80, 20), 2, cv2.LINE_AA)
        for p in pts:
            cv2.circle(grid, tuple(int(v) for v in p), 2, (200, 80, 20), -1)
        cv2.putText(grid, f"{y[ok][-1]:.4g}", (ox + pw - 70, oy + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (90, 90, 90), 1)
    with atomic_write(path) as tmp:
        if not cv2.imwrite(str(tmp), grid):
            raise DatasetError(f"could not write {path}")
