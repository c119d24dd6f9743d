"""``edgeseg bench``: per-stage latency, FPS, size, peak memory and mask mAP per model and backend."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import click

from .common import translate_errors


@click.command()
@click.option("--model", "-m", "models", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Model file or export folder; repeat for several.")
@click.option("--models-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Benchmark every model file and export folder in this folder.")
@click.option("--backends", default=None,
              help="Comma-separated backends to use (default: every installed backend that opens each file), "
                   "e.g. onnxruntime,openvino.")
@click.option("--imgsz", type=int, default=None,
              help="Input size for dynamic models and exports (fixed-size exports run at their own size).")
@click.option("--data", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="YOLO dataset .yaml: also measure mask mAP on its validation split.")
@click.option("--image", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Image to time on (default: a synthetic 640x480 picture).")
@click.option("--runs", type=click.IntRange(min=1), default=20, show_default=True, help="Timed runs per model.")
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True, help="Untimed warm-up runs.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Inference threads (default: the backend's).")
@click.option("--convert", is_flag=True,
              help="Also export each .pt checkpoint to the format of every selected backend (needs the convert extra).")
@click.option("--no-isolate", is_flag=True,
              help="Run every model in this process (faster; peak memory then leaves out libraries loaded by earlier models).")
@click.option("--format", "fmt", type=click.Choice(["md", "json"]), default="md", show_default=True,
              help="Report format.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the report to this file (atomically) instead of stdout.")
@translate_errors
def bench(models: Tuple[Path, ...], models_dir: Optional[Path], backends: Optional[str], imgsz: Optional[int],
          data: Optional[Path], image: Optional[Path], runs: int, warmup: int, threads: Optional[int], convert: bool,
          no_isolate: bool, fmt: str, out: Optional[Path]) -> None:
    """Benchmark models on this machine: per-stage latency (median, p90), FPS, model size, peak
    memory and, with --data, mask mAP; one row per model file and backend.

    Each model runs in its own process so its peak memory is its own. Checkpoints (.pt) run on
    the torch backend; with --convert they are also exported to each backend's format first.
    fp32 and int8 (or fp16) models of one format are also put side by side: speed-up over the
    fp32 model and, with --data, the mask and box mAP cost in points.

    \b
    Examples:
      edgeseg bench --model yolov8n-seg.onnx --model yolov8n-seg.tflite
      edgeseg bench --models-dir exports/ --backends onnxruntime,openvino --runs 50
      edgeseg bench --model yolov8n-seg.pt --convert --imgsz 320 --format json --out bench.json
      edgeseg bench --model yolov8n-seg.onnx --data coco128-seg.yaml
      edgeseg bench -m n.onnx -m n_int8.onnx -m n_openvino_model -m n_int8_openvino_model --data coco8-seg.yaml
    """
    from ..eval.bench import BenchSettings, run_bench, to_json, to_markdown
    from ..io import atomic_write

    if not models and models_dir is None:
        raise click.UsageError("give --model FILE (repeatable) or --models-dir DIR")
    settings = BenchSettings(
        runs=runs, warmup=warmup, imgsz=imgsz, threads=threads, image=str(image) if image else None,
        data=str(data) if data else None, isolate=not no_isolate, convert=convert,
        backends=[b.strip() for b in backends.split(",") if b.strip()] if backends else None,
    )
    report = run_bench([str(m) for m in models], settings, models_dir=str(models_dir) if models_dir else None,
                       progress=True)
    text = to_json(report) if fmt == "json" else to_markdown(report)
    if out is None:
        click.echo(text, nl=False)
        return
    with atomic_write(out) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    click.echo(f"wrote {out}", err=True)
