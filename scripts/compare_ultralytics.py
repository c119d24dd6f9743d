"""Compare edgeseg's ``Runtime`` with Ultralytics' own ``predict`` on photos the test suite never uses.

Run from the repository root with edgeseg's environment, giving a *side* virtualenv that holds
Ultralytics (never a dependency of edgeseg, never part of ``make test``)::

    python3.11 -m venv /work/ultra-venv
    /work/ultra-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 ultralytics==8.4.190 \\
        onnxruntime==1.32.0 ai-edge-litert==2.3.0     # the same ORT / LiteRT as edgeseg's venv
    .venv/bin/python scripts/compare_ultralytics.py /work/ultra-venv [--models a.onnx b.tflite ...]

Two processes, one file each way: this process writes the photos (PNG, so both sides decode the
same pixels whatever their OpenCV/libjpeg builds) and a job file into a temporary folder, then
runs itself under the side venv (``--side``), which runs Ultralytics and writes its detections to
an ``.npz``; edgeseg then runs on the same photos here and the two are matched.

Photos: 12 coco128-seg images that are neither coco8 images nor in ``reference/`` (every 9th
of the rest, sorted), plus derived ones made deterministically from them and from zidane.jpg:
crops whose objects touch every image edge, a portrait-shaped resize, a small odd-sized image.

Both sides run conf 0.25, iou 0.7, imgsz = the model's size (320 for the ONNX, 640 otherwise;
square letterbox for fixed-size exports, Ultralytics' stride-padded rectangle for the ``.pt``),
one thread. Masks are compared at source resolution in both of Ultralytics' modes:
``default`` (``process_mask(upsample=True)`` at input resolution, then ``scale_masks`` to the
source and ``> 0.5``: what ``Results.masks`` holds, scaled as Ultralytics scales it) against
edgeseg's default, and ``retina`` (``retina_masks=True``, ``process_mask_native``) against
``Runtime(retina_masks=True)``.

The two TFLite files carry no Ultralytics metadata, so Ultralytics would guess 999 classes and
fail; the side process is given copies with ``metadata.json`` (task, COCO names, imgsz) appended
as a zip, the way Ultralytics' own TFLite exports carry it. The flatbuffer is byte-identical.

Matching: per class, highest score first, the unmatched edgeseg detection of highest box IoU
(at least 0.5). Reported per model and mode: matched / Ultralytics-only / edgeseg-only counts,
max box error (px, source frame), max score error, min mask IoU over matched pairs, and whether
the issue's bounds (1.5 px, 0.01, 0.97) hold. ``--json FILE`` saves the full per-detection table.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"
MODELS = ASSETS / "models"
DEFAULT_MODELS = ["yolov8n-seg-320-int8dyn.onnx", "yolov8n-seg-640-int8w.tflite",
                  "yolov8n-seg-640-fullint8.tflite", "yolov8n-seg-coco.pt"]
CONF, IOU = 0.25, 0.7
BOUNDS = {"box_px": 1.5, "score": 0.01, "mask_iou": 0.97}
MODES = ("default", "retina")


#: A diagnosis row for int8-input models: edgeseg quantizes the input as TFLite defines it,
#: ``round(x / scale) + zero_point``; Ultralytics' LiteRT backend computes ``x / scale + zero_point``
#: and casts with ``astype(int8)``, which truncates toward zero. The row labelled with this suffix
#: runs edgeseg with Ultralytics' truncation (a patched lookup table, here only), to show whether
#: everything after the input tensor agrees.
TRUNCATED = " [input truncated as Ultralytics]"


def truncating_lut(spec: Any) -> np.ndarray:
    """The 256-entry pixel -> int table Ultralytics' cast gives (float32 arithmetic, as it runs)."""
    info = np.iinfo(spec.dtype)
    x = (np.arange(256, dtype=np.float32) / np.float32(255.0)) / np.float32(spec.scale) + np.float32(spec.zero_point)
    return np.clip(x, info.min, info.max).astype(spec.dtype)


def model_imgsz(name: str) -> int:
    return 320 if "-320-" in name else 640


# -- photos ------------------------------------------------------------------------------------
def make_photos(folder: Path) -> List[Path]:
    """Write the comparison photos as PNG into ``folder`` (deterministic); their paths."""
    import cv2

    coco = ASSETS / "datasets" / "coco128-seg" / "images" / "train2017"
    used = {p.stem for p in (ASSETS / "datasets" / "coco8-seg" / "images").rglob("*.jpg")}
    used |= {p.stem.split("__", 1)[1] for p in (ASSETS / "reference").glob("*.json")}
    rest = sorted(p for p in coco.glob("*.jpg") if p.stem not in used)
    picked = rest[::9][:12]
    out: List[Path] = []

    def save(name: str, img: np.ndarray) -> None:
        path = folder / f"{name}.png"
        cv2.imwrite(str(path), img)
        out.append(path)

    for p in picked:
        save(p.stem, cv2.imread(str(p)))
    # derived photos
    z = cv2.imread(str(ASSETS / "images" / "zidane.jpg"))  # 1280x720: people cut by every edge
    save("zidane_crop800", z[100:720, 200:1000])
    a = cv2.imread(str(picked[0]))
    h, w = a.shape[:2]
    save(f"{picked[0].stem}_crop_edges", a[h // 6: h - h // 6, w // 5: w - w // 5])
    b = cv2.imread(str(picked[3]))
    save(f"{picked[3].stem}_portrait", cv2.resize(b, (331, 701), interpolation=cv2.INTER_AREA))
    c = cv2.imread(str(picked[5]))
    save(f"{picked[5].stem}_small", cv2.resize(c, (217, 163), interpolation=cv2.INTER_AREA))
    return out


def with_metadata(src: Path, dst: Path, names: Dict[int, str], imgsz: int) -> Path:
    """A copy of a TFLite file with Ultralytics' ``metadata.json`` zip appended (flatbuffer unchanged)."""
    shutil.copyfile(src, dst)
    meta = {"task": "segment", "names": {int(k): v for k, v in names.items()}, "imgsz": [imgsz, imgsz],
            "stride": 32, "batch": 1, "channels": 3}
    with zipfile.ZipFile(dst, "a") as z:
        z.writestr("metadata.json", json.dumps(meta))
    return dst


# -- the Ultralytics side (runs under the side venv) ---------------------------------------------
def side(job_file: Path) -> None:
    import torch
    from ultralytics import YOLO
    from ultralytics.utils import ops

    torch.set_num_threads(1)
    job = json.loads(job_file.read_text())
    arrays: Dict[str, np.ndarray] = {}
    import cv2

    for m in job["models"]:
        model = YOLO(m["ultralytics_path"], task="segment")
        for img_path in job["images"]:
            im0 = cv2.imread(img_path)
            for mode in MODES:
                r = model.predict(im0, imgsz=m["imgsz"], conf=CONF, iou=IOU, retina_masks=mode == "retina",
                                  device="cpu", verbose=False)[0]
                key = f"{m['name']}|{Path(img_path).stem}|{mode}"
                arrays[key + "|boxes"] = r.boxes.xyxy.numpy().astype(np.float64)
                arrays[key + "|scores"] = r.boxes.conf.numpy().astype(np.float64)
                arrays[key + "|cls"] = r.boxes.cls.numpy().astype(np.int64)
                if r.masks is None:
                    masks = np.zeros((0,) + im0.shape[:2], bool)
                elif mode == "retina":
                    masks = r.masks.data.numpy() > 0.5
                else:  # input resolution -> source, as Ultralytics scales masks
                    masks = ops.scale_masks(r.masks.data[None].float(), im0.shape[:2])[0].numpy() > 0.5
                arrays[key + "|masks"] = np.packbits(masks, axis=-1)
        del model
    versions = {"ultralytics": __import__("ultralytics").__version__, "torch": torch.__version__,
                "opencv": cv2.__version__}
    for mod in ("onnxruntime", "ai_edge_litert"):
        try:
            versions[mod] = getattr(__import__(mod), "__version__", "?")
        except ImportError:
            versions[mod] = "absent"
    np.savez_compressed(job["out"], **arrays)
    Path(job["out"] + ".versions.json").write_text(json.dumps(versions))


# -- matching ----------------------------------------------------------------------------------
def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def match(ub: np.ndarray, us: np.ndarray, uc: np.ndarray, eb: np.ndarray, ec: np.ndarray) -> List[Tuple[int, int]]:
    """(ultralytics index, edgeseg index) pairs: same class, best box IoU >= 0.5, one-to-one."""
    used: set = set()
    pairs = []
    for i in np.argsort(-us, kind="stable"):
        best, best_iou = -1, 0.5
        for j in range(len(eb)):
            if j in used or ec[j] != uc[i]:
                continue
            iou = box_iou(ub[i], eb[j])
            if iou >= best_iou:
                best, best_iou = j, iou
        if best >= 0:
            used.add(best)
            pairs.append((int(i), best))
    return pairs


def compare(ultra_npz: Path, images: List[Path], models: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    import cv2

    from edgeseg import Runtime

    u = np.load(ultra_npz)
    rows: List[Dict[str, Any]] = []
    for m in models:
        for mode, variant in [(mode, v) for v in ("", TRUNCATED) for mode in MODES]:
            with Runtime(m["path"], conf=CONF, iou=IOU, threads=1, retina_masks=mode == "retina") as rt:
                if variant:
                    if not rt.input_spec.quantized:
                        continue
                    rt._pre._lut = truncating_lut(rt.input_spec)  # diagnosis only, see TRUNCATED
                label = m["name"] + variant
                for img_path in images:
                    im0 = cv2.imread(str(img_path))
                    key = f"{m['name']}|{img_path.stem}|{mode}"
                    ub, us, uc = u[key + "|boxes"], u[key + "|scores"], u[key + "|cls"]
                    um = np.unpackbits(u[key + "|masks"], axis=-1, count=im0.shape[1]).astype(bool)
                    res = rt(im0)
                    pairs = match(ub, us, uc, res.boxes.astype(np.float64), res.class_ids)
                    mu = {i for i, _ in pairs}
                    me = {j for _, j in pairs}
                    for i, j in pairs:
                        em = res.masks.mask(j) if res.masks is not None else np.zeros(im0.shape[:2], bool)
                        union = int((um[i] | em).sum())
                        rows.append({"model": label, "mode": mode, "image": img_path.stem, "class": int(uc[i]),
                                     "ultra_score": float(us[i]), "score_err": abs(float(us[i]) - float(res.scores[j])),
                                     "box_err": float(np.abs(ub[i] - res.boxes[j]).max()),
                                     "mask_iou": float((um[i] & em).sum() / union) if union else 1.0,
                                     "ultra_box": ub[i].round(2).tolist(), "edgeseg_box": res.boxes[j].round(2).tolist()})
                    for i in set(range(len(ub))) - mu:
                        zero = bool(ub[i][2] <= ub[i][0] or ub[i][3] <= ub[i][1])  # a box with no area left
                        rows.append({"model": label, "mode": mode, "image": img_path.stem, "class": int(uc[i]),
                                     "ultra_score": float(us[i]), "only": "ultralytics-zero-area" if zero else "ultralytics",
                                     "ultra_box": ub[i].round(2).tolist()})
                    for j in set(range(len(res))) - me:
                        rows.append({"model": label, "mode": mode, "image": img_path.stem,
                                     "class": int(res.class_ids[j]), "edgeseg_score": float(res.scores[j]),
                                     "only": "edgeseg", "edgeseg_box": res.boxes[j].round(2).tolist()})
    return rows


def summarize(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    table = []
    for label, mode in dict.fromkeys((r["model"], r["mode"]) for r in rows):
        rs = [r for r in rows if r["model"] == label and r["mode"] == mode]
        pairs = [r for r in rs if "only" not in r]
        s = {"model": label, "mode": mode, "matched": len(pairs),
             "ultra_only": sum(r.get("only") == "ultralytics" for r in rs),
             "ultra_zero_area": sum(r.get("only") == "ultralytics-zero-area" for r in rs),
             "edgeseg_only": sum(r.get("only") == "edgeseg" for r in rs),
             "max_box_px": max((r["box_err"] for r in pairs), default=0.0),
             "max_score": max((r["score_err"] for r in pairs), default=0.0),
             "min_mask_iou": min((r["mask_iou"] for r in pairs), default=1.0)}
        # Ultralytics keeps boxes clipped to zero area (wholly in the letterbox padding); edgeseg
        # drops them, so they are counted apart and do not fail the comparison
        s["pass"] = (s["ultra_only"] == 0 and s["edgeseg_only"] == 0 and s["max_box_px"] <= BOUNDS["box_px"]
                     and s["max_score"] <= BOUNDS["score"] and s["min_mask_iou"] >= BOUNDS["mask_iou"])
        table.append(s)
    return table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("venv", nargs="?", help="the side virtualenv holding ultralytics (e.g. /work/ultra-venv)")
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="model files in ../shared/assets/models")
    ap.add_argument("--keep", type=Path, help="write photos and Ultralytics' outputs here instead of a temp folder")
    ap.add_argument("--reuse", action="store_true",
                    help="with --keep: reuse Ultralytics' outputs already in that folder (edgeseg side only)")
    ap.add_argument("--json", type=Path, help="save every matched / unmatched detection here")
    ap.add_argument("--side", type=Path, help=argparse.SUPPRESS)  # internal: the Ultralytics process
    args = ap.parse_args()
    if args.side:
        side(args.side)
        return 0
    if not args.venv:
        ap.error("give the side virtualenv that holds ultralytics")
    py = Path(args.venv) / "bin" / "python"
    if not py.exists():
        ap.error(f"{py} not found: expected a virtualenv with ultralytics==8.4.190 (see this script's docstring)")
    if not MODELS.exists():
        ap.error(f"{MODELS} not found: the comparison needs ../shared/assets beside the repository")

    from edgeseg.io import load_names

    names = load_names(ASSETS / "datasets" / "coco128-seg.yaml")
    work = args.keep or Path(tempfile.mkdtemp(prefix="edgeseg-vs-ultralytics-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        photos = make_photos(work)
        models = []
        for name in args.models:
            path = MODELS / name
            upath = with_metadata(path, work / name, names, model_imgsz(name)) if path.suffix == ".tflite" else path
            models.append({"name": name, "path": str(path), "ultralytics_path": str(upath), "imgsz": model_imgsz(name)})
        job = work / "job.json"
        out = str(work / "ultralytics.npz")
        job.write_text(json.dumps({"models": models, "images": [str(p) for p in photos], "out": out}))
        env = dict(os.environ, YOLO_OFFLINE="1", YOLO_VERBOSE="False")
        if not (args.reuse and Path(out).exists()):
            subprocess.run([str(py), str(Path(__file__).resolve()), "--side", str(job)], check=True, env=env, cwd=work)
        rows = compare(Path(out), photos, models)
        table = summarize(rows)
        versions = json.loads(Path(out + ".versions.json").read_text())
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    import cv2

    import edgeseg

    print(f"Ultralytics side: {versions}; edgeseg {edgeseg.__version__}, opencv {cv2.__version__}")
    print(f"{len(photos)} photos: " + ", ".join(p.stem for p in photos))
    print(f"conf {CONF}, iou {IOU}; bounds: box <= {BOUNDS['box_px']} px, score <= {BOUNDS['score']}, "
          f"mask IoU >= {BOUNDS['mask_iou']}\n")
    print(f"{'model':66s} {'masks':8s} {'matched':>7s} {'U-only':>6s} {'U-0area':>7s} {'E-only':>6s} {'box px':>7s} "
          f"{'score':>7s} {'mask IoU':>8s}  bounds")
    for s in table:
        print(f"{s['model']:66s} {s['mode']:8s} {s['matched']:7d} {s['ultra_only']:6d} {s['ultra_zero_area']:7d} "
              f"{s['edgeseg_only']:6d} "
              f"{s['max_box_px']:7.3f} {s['max_score']:7.4f} {s['min_mask_iou']:8.4f}  {'pass' if s['pass'] else 'FAIL'}")
    if args.json:
        args.json.write_text(json.dumps({"versions": versions, "summary": table, "detections": rows}, indent=1))
    return 0 if all(s["pass"] for s in table) else 1


if __name__ == "__main__":
    sys.exit(main())
