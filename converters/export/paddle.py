"""PaddlePaddle: ``<name>_paddle_model/`` with ``inference_model/model.json`` (Paddle 3's PIR
program), ``inference_model/model.pdiparams`` (weights) and ``metadata.yaml`` (Ultralytics' place:
its loader reads ``inference_model/*.json`` and the ``metadata.yaml`` two levels up, so this folder
opens there too). Needs ``pip install 'edgeseg[convert-paddle]'`` (x2paddle + paddlepaddle); the
artifact runs with the ``paddle`` backend (``pip install 'edgeseg[paddle]'``, paddle inference).

x2paddle's ``onnx2paddle`` converts an intermediate ONNX graph of the fused float32 module (the
issue's route; Ultralytics' own ``export_paddle`` calls x2paddle's ``pytorch2paddle`` on a
``torch.jit.trace`` instead). Steps, each one for a measured reason:

1. ``torch.onnx.export`` at opset :data:`X2PADDLE_OPSET` (15), the newest opset x2paddle 1.6's
   ONNX mapper has (it maps an opset-17 graph with its opset-15 rules anyway).
2. onnxslim folds the shape arithmetic of the C2f ``split`` (the shapes are static): x2paddle
   turns ONNX's integer ``Div`` into ``paddle.divide``, which Paddle 3 computes in float32 and then
   refuses to multiply with the int64 that follows (``Type promotion only support calculations
   between floating-point numbers``).
3. ``MaxPool`` ``dilations`` that are all 1 (ONNX's default) are dropped: x2paddle refuses the
   attribute whenever it is present (``only dilations = 0 is supported``).
4. x2paddle runs in a child interpreter (:data:`_CONVERT`): it prints its progress on stdout,
   puts the output folder on ``sys.path`` to import the Python code it generates, and calls
   ``exit(0)`` on some failures; none of that may reach the caller. Two shims there fill in what
   x2paddle 1.6 (2024) imports from onnx and onnx >= 1.19 no longer has (``onnx.version.version``,
   ``onnx.mapping.TENSOR_TYPE_TO_NP_TYPE``); x2paddle's usage report (``ConverterCheck``, a web
   request) is disabled.
5. The same child loads the result with paddle inference and runs it on a seeded random input;
   each output is compared with the torch module's output of the same shape (never by position),
   and the export fails when any differs by more than :data:`PARITY_ATOL`.

Only ``inference_model/`` is kept: the generated dygraph code (``x2paddle_code.py``) and its
``model.pdparams`` (a second copy of the weights) stay in the temporary folder. Tensor names are
Paddle's: input ``x2paddle_images`` ``(1, 3, H, W)`` float32, outputs ``fetch_name_0``
``(1, 4+nc+nm, N)`` and ``fetch_name_1`` protos ``(1, nm, H/4, W/4)``; the Runtime tells them apart
by shape. float32 and a fixed input size only (x2paddle has no fp16 path of its own).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

from edgeseg.errors import ConversionError

from .registry import Exporter, ExportJob

__all__ = ["EXPORTER", "export_paddle", "X2PADDLE_OPSET", "PARITY_ATOL", "prepare_onnx"]

#: the newest ONNX opset x2paddle 1.6's ONNX mapper implements (OpSet7 ... OpSet15)
X2PADDLE_OPSET = 15
#: max abs difference between each paddle output and the torch output of the same shape
#: (box pixels, 0-1 scores, coefficients, protos); measured 1.1e-3 px and 1.2e-5 (protos) at 640
PARITY_ATOL = 1e-2
#: seconds the child process may take for conversion + check
CONVERT_TIMEOUT_S = 900.0
#: where x2paddle writes the inference model inside its output folder, and what this export keeps
INFERENCE_DIR = "inference_model"

# The conversion and the parity run, in a fresh interpreter (see the module docstring, step 4).
# argv: onnx path, x2paddle work folder, check input .npy, output .npz. Prints one JSON line.
_CONVERT = r"""
import json, os, sys, types
onnx_path, work, x_path, out_path = sys.argv[1:5]
def done(**kw):
    sys.__stdout__.write("\nEDGESEG " + json.dumps(kw) + "\n"); sys.__stdout__.flush(); os._exit(0)
import numpy as np
import onnx
if not hasattr(onnx, "version"):  # onnx >= 1.19 dropped onnx.version; x2paddle reads onnx.version.version
    onnx.version = types.SimpleNamespace(version=onnx.__version__)
if "onnx.mapping" not in sys.modules:
    try:
        import onnx.mapping
    except ImportError:  # onnx >= 1.19 dropped onnx.mapping; x2paddle imports TENSOR_TYPE_TO_NP_TYPE
        mapping = types.ModuleType("onnx.mapping")
        table = {}
        for code in onnx.TensorProto.DataType.values():
            try:
                table[code] = onnx.helper.tensor_dtype_to_np_dtype(code)
            except Exception:
                pass
        mapping.TENSOR_TYPE_TO_NP_TYPE = table
        sys.modules["onnx.mapping"] = onnx.mapping = mapping
try:
    import x2paddle
    from x2paddle.convert import onnx2paddle
    onnx2paddle(onnx_path, work, disable_feedback=True, enable_onnx_checker=True)
except SystemExit as exc:
    done(error="x2paddle exited (status %r) without a model" % (exc.code,))
except BaseException as exc:
    done(error="x2paddle: %s: %s" % (type(exc).__name__, str(exc).strip().splitlines()[-1][:400] if str(exc).strip() else ""))
model = os.path.join(work, "inference_model", "model.json")
if not os.path.isfile(model):
    model = os.path.join(work, "inference_model", "model.pdmodel")
if not os.path.isfile(model):
    done(error="x2paddle wrote no inference_model/model.json (or .pdmodel); it wrote: %s" % sorted(os.listdir(work)))
try:
    import paddle
    import paddle.inference as pi
    cfg = pi.Config(model, os.path.join(work, "inference_model", "model.pdiparams"))
    cfg.disable_gpu()
    cfg.disable_mkldnn()
    cfg.disable_glog_info()
    predictor = pi.create_predictor(cfg)
    x = np.load(x_path)
    names = predictor.get_input_names()
    if len(names) != 1:
        done(error="expected one input in the converted model, found %s" % names)
    h = predictor.get_input_handle(names[0])
    h.reshape(list(x.shape))
    h.copy_from_cpu(x)
    predictor.run()
    outs = {n: predictor.get_output_handle(n).copy_to_cpu() for n in predictor.get_output_names()}
    np.savez(out_path, **outs)
except BaseException as exc:
    done(error="paddle inference on the converted model: %s: %s" % (type(exc).__name__, str(exc).strip()[:400]))
done(input=names[0], outputs={n: list(v.shape) for n, v in outs.items()}, x2paddle=x2paddle.__version__,
     paddle=paddle.__version__)
"""


def prepare_onnx(model: Any) -> Any:
    """The ONNX graph x2paddle can convert: shape arithmetic folded (onnxslim; static shapes) and
    default ``MaxPool`` dilations removed. ``model``: an ``onnx.ModelProto``; returns a new one."""
    import onnxslim

    model = onnxslim.slim(model)
    for node in model.graph.node:
        if node.op_type == "MaxPool":
            keep = [a for a in node.attribute if not (a.name == "dilations" and all(v == 1 for v in a.ints))]
            del node.attribute[:]
            node.attribute.extend(keep)
    return model


def export_paddle(job: ExportJob) -> None:
    """Export into the folder ``job.path``: ``inference_model/model.json``, ``.pdiparams``, ``metadata.yaml``."""
    import tempfile

    import numpy as np
    import onnx
    import torch

    from .onnx import torch_to_onnx

    with tempfile.TemporaryDirectory(prefix="edgeseg-paddle-") as tmp_s:
        tmp = Path(tmp_s)
        onnx_path, work = tmp / f"{job.name}.onnx", tmp / "x2paddle"
        with job.stage(f"torch.onnx.export (opset {X2PADDLE_OPSET}) + onnxslim"):
            torch_to_onnx(job.net, job.im, onnx_path, opset=X2PADDLE_OPSET)
            onnx.save(prepare_onnx(onnx.load(str(onnx_path))), str(onnx_path))
        x = np.random.default_rng(0).random(tuple(job.im.shape), dtype=np.float32)
        np.save(tmp / "x.npy", x)
        with job.stage("x2paddle onnx2paddle + paddle inference check (child process)"):
            _convert(onnx_path, work, tmp / "x.npy", tmp / "out.npz")
            ref = [t.numpy() for t in job.net(torch.from_numpy(x))]
            with np.load(tmp / "out.npz") as got:
                _check_parity({k: got[k] for k in got.files}, ref)
        with job.stage("copy inference_model"):
            src = work / INFERENCE_DIR
            files = [p for p in src.iterdir() if p.suffix in (".json", ".pdmodel", ".pdiparams")]
            (job.path / INFERENCE_DIR).mkdir()
            for p in files:
                shutil.copy2(p, job.path / INFERENCE_DIR / p.name)
    with job.stage("metadata"):
        job.write_sidecar(job.path)


def _convert(onnx_path: Path, work: Path, x_path: Path, out_path: Path) -> Dict[str, Any]:
    """Run :data:`_CONVERT` in a child interpreter; its JSON report, or ConversionError with its reason."""
    try:
        proc = subprocess.run([sys.executable, "-c", _CONVERT, str(onnx_path), str(work), str(x_path), str(out_path)],
                              capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise ConversionError(f"paddle export: x2paddle did not finish in {CONVERT_TIMEOUT_S:g} s") from exc
    lines = [ln for ln in (proc.stdout or "").splitlines() if ln.startswith("EDGESEG ")]
    report: Dict[str, Any] = json.loads(lines[-1][len("EDGESEG "):]) if lines else {}
    if "error" in report:
        # x2paddle lists the ops it has no mapping for on stdout, one "===== Op =====" line each
        ops = re.findall(r"^=+ (\w+) =+$", proc.stdout or "", re.M)
        raise ConversionError(f"paddle export: {report['error']}"
                              + (f" (ONNX ops x2paddle cannot convert: {', '.join(ops)})" if ops else ""))
    if proc.returncode != 0 or not report:
        said = " ".join(((proc.stderr or "") + (proc.stdout or "")).split())[-400:]
        raise ConversionError(f"paddle export: the x2paddle child process failed (exit status {proc.returncode})"
                              + (f": {said}" if said else ""))
    return report


def _check_parity(got: Dict[str, Any], ref: List[Any]) -> None:
    """Each paddle output against the torch output of the same shape; ConversionError past :data:`PARITY_ATOL`."""
    by_shape: Dict[Tuple[int, ...], Any] = {tuple(r.shape): r for r in ref}
    if len(by_shape) != len(ref) or sorted(tuple(v.shape) for v in got.values()) != sorted(by_shape):
        raise ConversionError(f"paddle export: the converted model's outputs "
                              f"{ {k: list(v.shape) for k, v in got.items()} } do not match the torch outputs "
                              f"{[list(s) for s in by_shape]}")
    import numpy as np

    for name, value in got.items():
        err = float(np.abs(value.astype(np.float32) - by_shape[tuple(value.shape)]).max())
        if not err <= PARITY_ATOL:
            raise ConversionError(f"paddle export: output {name} {list(value.shape)} differs from the torch model by "
                                  f"{err:.4g} (max allowed {PARITY_ATOL:g}); x2paddle mistranslated the graph")


EXPORTER = Exporter(
    name="paddle",
    title="PaddlePaddle",
    suffix="_paddle_model",
    folder=True,
    folder_files=(INFERENCE_DIR, "*.yaml"),
    description="PaddlePaddle inference model (x2paddle from ONNX), checked against torch",
    contents="inference_model/model.json + model.pdiparams, metadata.yaml",
    export=export_paddle,
    requires=("onnx", "onnxslim", "x2paddle", "paddle"),
    extra="convert-paddle",
    backend="paddle",
    stages=4,
    order=92,
)
