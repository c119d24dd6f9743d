"""The trainer, end to end on tiny models: the loss falls, checkpoints load and run, resume is exact,
Ctrl-C leaves a resumable run, starts from a description / checkpoint / transferred weights."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the trainer needs torch (pip install 'edgeseg[convert]')")

from _assets import ASSETS, require_assets  # noqa: E402
from edgeseg.converters import load_model  # noqa: E402
from edgeseg.converters.arch import architecture  # noqa: E402
from edgeseg.converters.train import TrainConfig, train  # noqa: E402
from edgeseg.errors import InputError, ModelLoadError  # noqa: E402
from edgeseg.eval.datasets.synth import synth_dataset  # noqa: E402

COCO8 = ASSETS / "datasets" / "coco8-seg.yaml"
LOSSES = ("train/box_loss", "train/seg_loss", "train/cls_loss", "train/dfl_loss")
NO_AUG = {"hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0, "degrees": 0.0, "translate": 0.0, "scale": 0.0, "shear": 0.0,
          "fliplr": 0.0, "mosaic": 0.0}


def tiny(nc: int) -> dict:
    """yolov8-seg at 1/16 width: about 0.6 M parameters, a step at 64 px in well under a second."""
    arch = architecture("yolov8-seg", "n", nc)
    arch["scales"]["n"] = [0.33, 0.0625, 1024]
    return arch


def quick(**kw) -> dict:
    """Settings of a quick CPU run (AdamW, no warmup, one optimizer step per batch)."""
    base = dict(imgsz=64, batch=4, workers=0, optimizer="AdamW", lr0=0.002, warmup_epochs=0, nbs=4, close_mosaic=0,
                verbose=False, exist_ok=True)
    base.update(kw)
    return base


def total(row: dict) -> float:
    return sum(row[k] for k in LOSSES)


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "ds"
    synth_dataset(out, images=10, imgsz=64, seed=0, classes=3, val_fraction=0.2)
    return out / "synth.yaml"


@pytest.fixture(scope="module")
def run(synth: Path, tmp_path_factory: pytest.TempPathFactory):
    """Three epochs on synthetic data with augmentation and validation: the shared run."""
    project = tmp_path_factory.mktemp("runs")
    return train(data=str(synth), model=tiny(3), epochs=3, project=str(project), name="synth",
                 **quick(batch=2, nbs=2, close_mosaic=1))


@pytest.mark.parametrize("dataset", ["coco8", "synth"])
def test_loss_falls_when_fitting_a_small_set(dataset: str, synth: Path, tmp_path: Path) -> None:
    """Without augmentation, all train images in one batch, the model fits them: the loss falls."""
    if dataset == "coco8":
        require_assets(COCO8)
        data, nc, batch = COCO8, 80, 4
    else:
        data, nc, batch = synth, 3, 8
    r = train(data=str(data), model=tiny(nc), epochs=10, project=str(tmp_path), name="fit", val=False,
              augment=NO_AUG, **quick(batch=batch, nbs=batch))
    first = {k: np.mean([row[k] for row in r.rows[:2]]) for k in LOSSES}
    last = {k: np.mean([row[k] for row in r.rows[-2:]]) for k in LOSSES}
    assert total(last) < 0.7 * total(first), [round(total(x), 3) for x in r.rows]
    for k in ("train/seg_loss", "train/cls_loss"):
        assert last[k] < first[k], (k, first[k], last[k])


def test_run_layout_results_csv_and_curves(run) -> None:
    assert run.save_dir.name == "synth" and run.stopped == "done"
    assert run.last == run.save_dir / "weights" / "last.pt" and run.last.is_file() and run.best.is_file()
    rows = list(csv.DictReader(open(run.results_csv)))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    for key in (*LOSSES, "metrics/mAP50(B)", "metrics/mAP50-95(M)", "lr/pg0", "time"):
        assert key in rows[0], key
        assert all(np.isfinite(float(r[key])) for r in rows)
    assert 0 <= float(rows[-1]["metrics/mAP50(M)"]) <= 1
    assert (run.save_dir / "results.png").stat().st_size > 1000
    assert not list(run.save_dir.rglob(".*"))  # no temporary files left behind


def test_checkpoints_load_and_run_through_runtime_and_val(run, synth: Path) -> None:
    from edgeseg import Runtime
    from edgeseg.eval.validate import validate

    for path in (run.last, run.best):
        loaded = load_model(path)
        assert loaded.kind == "edgeseg" and loaded.names == {0: "circle", 1: "rectangle", 2: "triangle"}
        assert loaded.imgsz == (64, 64)
    with Runtime(run.best, backend="torch", conf=0.001) as rt:
        res = rt(str(next((synth.parent / "images" / "val").iterdir())))
        assert res.orig_shape == (64, 64) and res.masks is not None
        m = validate(rt, synth)
    best_row = run.rows[run.best_epoch - 1]
    assert m.seg.map50 == pytest.approx(best_row["metrics/mAP50(M)"], abs=1e-9)  # val of best.pt = its epoch's row


def test_best_checkpoint_converts_to_onnx_with_the_same_metrics(run, synth: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from edgeseg import Runtime
    from edgeseg.converters import export
    from edgeseg.eval.validate import validate

    out = export(run.best, to="onnx", imgsz=64, out=tmp_path / "best.onnx", progress=False)
    with Runtime(out, conf=0.001) as rt:
        assert rt.names == {0: "circle", 1: "rectangle", 2: "triangle"} and rt.imgsz == (64, 64)
        m = validate(rt, synth)
    best_row = run.rows[run.best_epoch - 1]
    assert m.box.map50 == pytest.approx(best_row["metrics/mAP50(B)"], abs=0.01)
    assert m.seg.map50 == pytest.approx(best_row["metrics/mAP50(M)"], abs=0.01)


def test_resume_after_ctrl_c_equals_an_uninterrupted_run(synth: Path, tmp_path: Path) -> None:
    """Ctrl-C part-way leaves last.pt; --resume finishes with the same weights, rows and epochs as
    a run that was never interrupted (CPU, one process: bit for bit)."""
    args = ["--data", str(synth), "--model", str(tmp_path / "tiny.yaml"), "--epochs", "3", "--imgsz", "64",
            "--batch", "2", "--workers", "0", "--optimizer", "AdamW", "--lr0", "0.002", "--warmup-epochs", "0",
            "--close-mosaic", "1", "--no-val", "--project", str(tmp_path), "-q"]
    import yaml

    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny(3)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-c", "from edgeseg.cli import main; main()"]
    subprocess.run(cli + ["train", *args, "--name", "straight"], check=True, env=env, capture_output=True, timeout=600)
    proc = subprocess.Popen(cli + ["train", *args, "--name", "cut"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    csv_path = tmp_path / "cut" / "results.csv"
    deadline = time.time() + 300
    while not csv_path.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    state = torch.load(tmp_path / "cut" / "weights" / "last.pt", weights_only=True)["train"]
    assert state["stopped"] == "interrupted" and "--resume" in out, out
    assert state["epoch"] == 1  # in the second epoch (0-based 1), some batches done
    done = subprocess.run(cli + ["train", "--resume", str(tmp_path / "cut" / "weights" / "last.pt"), "-q"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    a = torch.load(tmp_path / "straight" / "weights" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "weights" / "last.pt", weights_only=True)
    assert a["train"]["epoch"] == b["train"]["epoch"] == 3
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    ra = [{k: v for k, v in r.items() if k != "time"} for r in a["train"]["rows"]]
    rb = [{k: v for k, v in r.items() if k != "time"} for r in b["train"]["rows"]]
    assert ra == rb
    again = subprocess.run(cli + ["train", "--resume", str(tmp_path / "cut"), "-q"], env=env, capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 1 and "already finished (3 of 3 epochs)" in again.stderr


def test_starts_checkpoint_with_other_classes_and_pretrained_transfer(run, synth: Path, tmp_path: Path) -> None:
    """--model x.pt with another class count rebuilds the head; --pretrained reports what it copied."""
    require_assets(COCO8)
    from edgeseg.converters.train.nets import build_model

    names80 = {i: f"c{i}" for i in range(80)}
    model, notes = build_model(str(run.best), names80)
    assert model.nc == 80 and "has 3 classes, the dataset 80" in notes[0] and "transferred" in notes[0]
    model, notes = build_model(tiny(3), {0: "a", 1: "b", 2: "c"}, pretrained=str(run.last))
    n_total = len(model.state_dict())
    assert notes[-1].startswith(f"transferred {n_total}/{n_total} tensors")
    same = load_model(run.last).model.state_dict()
    assert all(torch.equal(v, same[k]) for k, v in model.state_dict().items())
    model, notes = build_model("yolov8n-seg", {0: "a"})
    assert model.nc == 1 and notes == ["new model from yolov8n-seg"]
    r = train(data=str(COCO8), model=str(run.best), epochs=1, project=str(tmp_path), name="ft", val=False,
              **quick(max_batches=1))
    assert load_model(r.last).model.nc == 80


@pytest.mark.parametrize("kw,message", [
    ({"imgsz": 100}, "imgsz must be a multiple of 32"),
    ({"model": "yolov9q-seg"}, "expected a scale name such as yolov8n-seg"),
    ({"optimizer": "Lion"}, "expected auto, SGD or AdamW"),
    ({"device": "tpu"}, "expected cpu, cuda"),
    ({"colour": 1}, "unknown settings ['colour']"),
])
def test_bad_settings_say_what_was_expected(kw: dict, message: str, synth: Path, tmp_path: Path) -> None:
    with pytest.raises((InputError, ModelLoadError)) as err:
        train(data=str(synth), **{**quick(model=tiny(3), epochs=1, project=str(tmp_path), val=False), **kw})
    assert message in str(err.value)


def test_resume_needs_a_training_checkpoint(run) -> None:
    with pytest.raises(InputError, match="holds no training state"):
        train(resume=str(run.best))
    with pytest.raises(InputError, match="already finished"):
        train(resume=str(run.last))


def test_config_defaults_match_the_cli() -> None:
    """`edgeseg train`'s option defaults are the trainer's own."""
    from edgeseg.cli.train import train as cmd

    cfg = TrainConfig()
    defaults = {p.name: p.default for p in cmd.params}
    for name in ("epochs", "imgsz", "batch", "workers", "optimizer", "lr0", "lrf", "patience", "close_mosaic", "seed",
                 "project", "name", "nproc", "warmup_epochs"):
        assert defaults[name] == getattr(cfg, name), name


def test_cli_module_does_not_import_torch() -> None:
    code = "import sys, edgeseg.cli.train, edgeseg.cli.data; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_two_process_gloo_run_through_torchrun(synth: Path, tmp_path: Path) -> None:
    """`torchrun --nproc_per_node 2 -m edgeseg.converters.train ...`: DDP over gloo on the CPU, one
    run folder written by rank 0, checkpoints that load."""
    import yaml

    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny(3)))
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
           "-m", "edgeseg.converters.train", "--data", str(synth), "--model", str(tmp_path / "tiny.yaml"),
           "--epochs", "1", "--imgsz", "64", "--batch", "4", "--workers", "0", "--optimizer", "AdamW",
           "--warmup-epochs", "0", "--device", "cpu", "--project", str(tmp_path), "--name", "ddp", "-q"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "tiny.yaml"]  # one folder, not one per rank
    state = torch.load(tmp_path / "ddp" / "weights" / "last.pt", weights_only=True)["train"]
    assert state["epoch"] == 1 and len(state["rows"]) == 1 and np.isfinite(total(state["rows"][0]))
    assert load_model(tmp_path / "ddp" / "weights" / "best.pt").model.nc == 3


def test_folded_batchnorm_stays_fixed_when_fine_tuning(run, synth: Path, tmp_path: Path) -> None:
    """A checkpoint rebuilt from fused weights has pass-through BatchNorm (mean 0, variance 1 - eps, scale 1):
    train-mode batch statistics would rescale every layer, so the trainer keeps those layers in eval mode."""
    from edgeseg.converters.checkpoint import save_checkpoint
    from edgeseg.converters.train.nets import folded_batchnorms

    loaded = load_model(run.best)
    bns = [m for m in loaded.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert folded_batchnorms(loaded.model) == []  # trained statistics are not pass-through
    with torch.no_grad():
        for m in bns:
            m.running_mean.zero_()
            m.running_var.fill_(1 - m.eps)
            m.weight.fill_(1)
    assert len(folded_batchnorms(loaded.model)) == len(bns)
    folded = save_checkpoint(loaded, tmp_path / "folded.pt")
    r = train(data=str(synth), model=str(folded), epochs=1, project=str(tmp_path), name="ft", val=False,
              **quick(max_batches=2))
    after = [m for m in load_model(r.last).model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.all(m.running_mean == 0) and torch.allclose(m.running_var, torch.full_like(m.running_var, 1 - m.eps))
               for m in after)


def test_mask_targets_are_the_covered_fraction_of_each_prototype_cell(synth: Path) -> None:
    """Masks are drawn at image resolution and averaged down to the prototype grid: a cell an
    object half covers gets 0.5, so the model learns where an edge lies inside a 4-pixel cell."""
    import cv2

    from edgeseg.converters.train.data import SegDataset
    from edgeseg.converters.train.loss import _coverage

    ds = SegDataset(synth, "train", imgsz=64, augment=False)
    _, cls, _, overlap = ds[0]
    assert overlap.shape == (64, 64) and overlap.dtype == np.int16 and 0 < overlap.max() <= len(cls)
    cover = _coverage(torch.from_numpy(overlap), len(cls), (16, 16))
    assert cover.shape == (len(cls), 16, 16)
    for j in range(len(cls)):  # the same as OpenCV's area resize of each object's binary mask
        ref = cv2.resize((overlap == j + 1).astype(np.float32), (16, 16), interpolation=cv2.INTER_AREA)
        np.testing.assert_allclose(cover[j].numpy(), ref, atol=1e-6)
    assert ((cover > 0) & (cover < 1)).any(), "edges fall inside cells: some targets are fractional"
    # a map already on the grid gives 0/1 targets; objects past n are left out
    grid = torch.tensor([[1, 2], [0, 3]], dtype=torch.int16)
    assert _coverage(grid, 2, (2, 2)).tolist() == [[[1.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [0.0, 0.0]]]
    with pytest.raises(ValueError, match="whole multiple"):
        _coverage(torch.zeros((10, 10), dtype=torch.int16), 1, (4, 4))
