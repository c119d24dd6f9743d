"""`import edgeseg` stays light: no torch, no backend library, no converters."""
from __future__ import annotations

import subprocess
import sys

HEAVY = ["torch", "tensorflow", "tf_keras", "onnx2tf", "tensorflowjs", "onnxruntime", "ai_edge_litert", "tflite_runtime", "openvino", "ncnn",
         "coremltools", "ultralytics", "onnx", "edgeseg.converters"]


def test_import_edgeseg_loads_no_heavy_module():
    code = (
        "import sys, edgeseg\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_runtime_class_cli_and_backend_registry_load_no_vendor_library():
    # the registry imports each backend module (edgeseg.converters.torch_backend included);
    # none of them may import its vendor library before a model is loaded
    code = (
        "import sys, edgeseg\n"
        "edgeseg.Runtime; edgeseg.Results; edgeseg.Masks\n"
        "import edgeseg.cli, edgeseg.backend\n"
        "edgeseg.backend.backend_classes()\n"
        f"print([m for m in {HEAVY[:-1]!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
