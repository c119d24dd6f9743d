"""TensorFlow exports of the real COCO checkpoint at 640: the SavedModel and the frozen GraphDef run
through Runtime (``tensorflow`` backend) and pass ``edgeseg verify``'s fp32 limits against the .pt;
the TF.js graph model runs in headless Chromium with @tensorflow/tfjs and finds the same objects on
bus.jpg as the SavedModel (same classes, boxes within 2 px).

One SavedModel conversion is shared by the session: the pb and tfjs exports are written beside it,
so they reuse it (same checkpoint and size) instead of converting again."""
from __future__ import annotations

import http.server
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict

import numpy as np
import pytest

from _assets import IMAGES, MODELS, ROOT, require_assets

PT = MODELS / "yolov8n-seg-coco.pt"
BUS = IMAGES / "bus.jpg"
IMGSZ = 640
TF_MODULES = ("tensorflow", "tf_keras", "onnx2tf", "onnx_graphsurgeon", "sng4onnx", "onnxslim")
MISSING = [m for m in TF_MODULES if importlib.util.find_spec(m) is None]
needs_tf = pytest.mark.skipif(bool(MISSING), reason=f"TF exports need {', '.join(MISSING)}: pip install "
                              "'edgeseg[convert-tf]' && pip install --no-deps tf-keras onnx2tf tensorflowjs")
TFJS_DIR = Path(os.environ.get("EDGESEG_TFJS_DIR") or Path.home() / ".cache" / "edgeseg-tfjs")
TFJS_JS = TFJS_DIR / "node_modules" / "@tensorflow" / "tfjs" / "dist" / "tf.min.js"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
EDGESEG = [sys.executable, "-c", "from edgeseg.cli import main; main(prog_name='edgeseg')"]


@pytest.fixture(scope="session")
def tf_dir(tmp_path_factory):
    require_assets(PT, BUS)
    return tmp_path_factory.mktemp("tf")


@pytest.fixture(scope="session")
def saved_model(tf_dir):
    from edgeseg.converters import export

    t0 = time.perf_counter()
    out = export(PT, to="saved_model", imgsz=IMGSZ, out=tf_dir / "yolov8n-seg-coco_saved_model", progress=False)
    print(f"saved_model export at {IMGSZ}: {time.perf_counter() - t0:.1f} s")
    return out


@pytest.fixture(scope="session")
def pb(saved_model):
    from edgeseg.converters import export

    t0 = time.perf_counter()
    out = export(PT, to="pb", imgsz=IMGSZ, out=saved_model.parent / "yolov8n-seg-coco.pb", progress=False)
    print(f"pb export (from the SavedModel beside it): {time.perf_counter() - t0:.1f} s")
    return out


@pytest.fixture(scope="session")
def web_model(saved_model):
    if importlib.util.find_spec("tensorflowjs") is None:
        pytest.skip("TF.js export needs tensorflowjs: pip install --no-deps tensorflowjs==4.22.0")
    from edgeseg.converters import export

    t0 = time.perf_counter()
    out = export(PT, to="tfjs", imgsz=IMGSZ, out=saved_model.parent / "yolov8n-seg-coco_web_model", progress=False)
    print(f"tfjs export (from the SavedModel beside it): {time.perf_counter() - t0:.1f} s")
    return out


def _onnx_meta_keys():
    from edgeseg.converters.checkpoint import load_model
    from edgeseg.converters.export import export_metadata

    return set(export_metadata(load_model(PT), (IMGSZ, IMGSZ), half=False, dynamic=False, fmt="onnx"))


@needs_tf
@pytest.mark.parametrize("kind", ["saved_model", "pb"])
def test_tf_export_verifies_against_the_checkpoint(kind, request):
    from edgeseg import Runtime
    from edgeseg.eval.verify import verify

    art = request.getfixturevalue(kind)
    rep = verify(PT, art, [IMAGES])
    assert rep.precision == "fp32"
    assert rep.passed, rep.table()
    assert all(r.same_input for r in rep.images)  # NHWC TF and NCHW torch got the same tensor
    with Runtime(art) as rt:
        assert rt.backend.name == "tensorflow"
        assert rt.input_spec.shape == (1, IMGSZ, IMGSZ, 3) and rt.input_spec.dtype == np.float32
        assert {s.name: s.shape for s in rt.backend.outputs} == {"output0": (1, 116, 8400),
                                                                  "output1": (1, 160, 160, 32)}
        assert all(s.dtype == np.float32 for s in rt.backend.outputs)
        assert rt.layout.protos_nhwc and rt.layout.boxes_normalized is False
        assert rt.meta.names[5] == "bus" and rt.meta.stride == 32 and rt.meta.imgsz == (IMGSZ, IMGSZ)
        assert rt.meta.source.startswith("tensorflow metadata")
        assert rt.backend.describe()["model"] == ("frozen GraphDef" if kind == "pb" else "SavedModel (serving_default)")


@needs_tf
def test_saved_model_metadata_in_its_asset_and_beside(saved_model):
    import yaml

    keys = _onnx_meta_keys()
    asset = yaml.safe_load((saved_model / "assets" / "metadata.yaml").read_text())
    top = yaml.safe_load((saved_model / "metadata.yaml").read_text())
    assert asset == top
    assert keys <= set(asset) and asset["boxes_normalized"] is False
    assert asset["names"][0] == "person" and asset["imgsz"] == [IMGSZ, IMGSZ] and asset["args"]["format"] == "saved_model"
    # the asset is tracked by the SavedModel itself (it survives a copy of the folder without the sidecar)
    import tensorflow as tf

    loaded = tf.saved_model.load(str(saved_model))
    assert Path(loaded.metadata.asset_path.numpy().decode()).name == "metadata.yaml"


@needs_tf
def test_pb_is_self_contained_with_metadata_node(pb):
    from edgeseg.runtimes.tensorflow import METADATA_NODE

    import tensorflow as tf

    gd = tf.compat.v1.GraphDef()
    gd.ParseFromString(pb.read_bytes())
    nodes = {n.name: n for n in gd.node}
    assert nodes["images"].op == "Placeholder"
    assert nodes["output0"].op == nodes["output1"].op == "Identity"
    assert not any(n.op == "VarHandleOp" for n in gd.node)  # frozen: no variables left
    meta = json.loads(nodes[METADATA_NODE].attr["value"].tensor.string_val[0])
    assert _onnx_meta_keys() <= set(meta) and meta["names"]["5"] == "bus" and meta["args"]["format"] == "pb"


@needs_tf
def test_tensorflow_backend_bad_files(tmp_path):
    from edgeseg import Runtime
    from edgeseg.errors import ModelLoadError

    junk = tmp_path / "junk.pb"
    junk.write_bytes(b"\x00\xff not a graph def" * 10)
    with pytest.raises(ModelLoadError, match="not a TensorFlow GraphDef|expected a frozen graph"):
        Runtime(junk)
    broken = tmp_path / "broken_saved_model"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"garbage")
    with pytest.raises(ModelLoadError, match="cannot load the SavedModel"):
        Runtime(broken)


def test_missing_tf_toolchain_names_the_pip_lines(tmp_path):
    # onnx2tf made unimportable (sys.modules[name] = None): convert fails before any work, naming both lines
    code = ("import sys; sys.modules['onnx2tf'] = None\n"
            "from edgeseg.cli import main; main(prog_name='edgeseg')")
    require_assets(PT)
    out = subprocess.run([sys.executable, "-c", code, "convert", str(PT), "--to", "saved_model", "--out",
                          str(tmp_path / "x_saved_model")], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "pip install 'edgeseg[convert-tf]' && pip install --no-deps tf-keras==2.21.0 onnx2tf==1.29.24" in text, text
    assert "Traceback" not in text and not (tmp_path / "x_saved_model").exists()


def test_convert_help_and_the_backend_registry_import_no_tf_toolchain():
    code = ("import sys\n"
            "from click.testing import CliRunner\n"
            "from edgeseg.cli import main\n"
            "import edgeseg.backend; edgeseg.backend.backend_classes()\n"
            "r = CliRunner().invoke(main, ['convert', '--help'])\n"
            "assert 'saved_model' in r.output and 'tfjs' in r.output, r.output\n"
            "print([m for m in ('tensorflow', 'tf_keras', 'onnx2tf', 'tensorflowjs', 'torch') if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=str(ROOT))
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


@pytest.mark.parametrize("change, reused", [({}, True), ({"source_sha256": "0" * 64}, False),
                                             ({"imgsz": [320, 320]}, False), ({"quantization": "fp16"}, False)])
def test_pb_and_tfjs_reuse_only_a_saved_model_of_the_same_checkpoint_and_size(tmp_path, change, reused):
    import types

    import yaml

    from edgeseg.converters.export._tf import reusable_saved_model

    meta = {"source_sha256": "ab" * 32, "imgsz": [640, 640], "edgeseg_version": "0.1.0", "names": {0: "person"},
            "quantization": "fp32"}
    folder = tmp_path / "m_saved_model"
    (folder / "assets").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"x")
    (folder / "assets" / "metadata.yaml").write_text(yaml.safe_dump(dict(meta, **change)))
    job = types.SimpleNamespace(target=tmp_path / "m.pb", name="m", meta=meta)
    assert reusable_saved_model(job) == (folder if reused else None)


def test_makefile_installs_the_no_deps_packages():
    from edgeseg.converters.export._tf import TF_NO_DEPS

    make = (ROOT / "Makefile").read_text()
    assert re.search(r"^NO_DEPS := (.*)$", make, re.M).group(1).strip() == TF_NO_DEPS
    assert "convert-tf" in re.search(r"^EXTRAS := (.*)$", make, re.M).group(1).split(",")


# -- TF.js in headless Chromium -------------------------------------------------------------------

PAGE = """<!doctype html><html><head><title>edgeseg tfjs</title><script src="/tf.min.js"></script></head><body><script>
(async () => {
  try {
    await tf.setBackend('cpu');
    const model = await tf.loadGraphModel('/model/model.json');
    const buf = await (await fetch('/input.bin')).arrayBuffer();
    const x = tf.tensor(new Float32Array(buf), %(shape)s, 'float32');
    const out = model.predict(x);
    for (const [name, t] of Object.entries(out)) {
      const data = await t.data();
      await fetch('/out/' + name + '?shape=' + t.shape.join(','), {method: 'POST', body: data.buffer});
    }
    await fetch('/done?backend=' + tf.getBackend() + '&version=' + tf.version.tfjs, {method: 'POST'});
  } catch (e) {
    await fetch('/error', {method: 'POST', body: String((e && e.stack) || e)});
  }
})();
</script></body></html>"""


class _TfjsServer(http.server.ThreadingHTTPServer):
    """Serves the page, tf.min.js, the web model and the input tensor; collects what the page posts."""

    def __init__(self, model_dir: Path, x: np.ndarray) -> None:
        self.model_dir, self.x = model_dir, np.ascontiguousarray(x, dtype=np.float32)
        self.outputs: Dict[str, np.ndarray] = {}
        self.done = threading.Event()
        self.error = ""
        self.info: Dict[str, str] = {}
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _TfjsServer

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, body: bytes, ctype: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        s = self.server
        if self.path == "/":
            return self._send((PAGE % {"shape": json.dumps(list(s.x.shape))}).encode(), "text/html")
        if self.path == "/tf.min.js":
            return self._send(TFJS_JS.read_bytes(), "application/javascript")
        if self.path == "/input.bin":
            return self._send(s.x.tobytes(), "application/octet-stream")
        if self.path.startswith("/model/"):
            f = s.model_dir / self.path[len("/model/"):]
            if f.is_file() and f.parent == s.model_dir:
                return self._send(f.read_bytes(), "application/json" if f.suffix == ".json" else "application/octet-stream")
        self.send_error(404)

    def do_POST(self) -> None:
        s = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path, _, query = self.path.partition("?")
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        if path.startswith("/out/"):
            shape = tuple(int(v) for v in params["shape"].split(","))
            s.outputs[path[len("/out/"):]] = np.frombuffer(body, dtype=np.float32).reshape(shape)
        elif path == "/error":
            s.error = body.decode("utf-8", "replace")
            s.done.set()
        elif path == "/done":
            s.info = params
            s.done.set()
        self._send(b"ok", "text/plain")


def _run_in_chromium(model_dir: Path, x: np.ndarray, timeout: float = 300) -> _TfjsServer:
    server = _TfjsServer(model_dir, x)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    profile = tempfile.mkdtemp(prefix="edgeseg-chromium-")
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    browser = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
         "--remote-debugging-port=0", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not server.done.wait(timeout):
            pytest.fail(f"the TF.js page did not finish within {timeout:.0f} s")
    finally:
        browser.terminate()
        try:
            browser.wait(timeout=20)
        except subprocess.TimeoutExpired:
            browser.kill()
        server.shutdown()
        server.server_close()
        shutil.rmtree(profile, ignore_errors=True)
    return server


@needs_tf
def test_web_model_files_and_metadata(web_model):
    model = json.loads((web_model / "model.json").read_text())
    assert model["format"] == "graph-model"
    meta = model["userDefinedMetadata"]
    assert _onnx_meta_keys() <= set(meta) and meta["names"]["0"] == "person" and meta["args"]["format"] == "tfjs"
    # listed in structuredOutputKeys' order, which tfjs' predict() names them by
    assert list(model["signature"]["outputs"]) == meta["structuredOutputKeys"] == ["output0", "output1"]
    assert list(model["signature"]["inputs"]) == ["images"]
    shards = sorted(p.name for p in web_model.glob("group1-shard*of*.bin"))
    assert shards and all(p["paths"] for p in model["weightsManifest"])
    assert (web_model / "metadata.yaml").is_file()


@needs_tf
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium; `make test` installs it)")
@pytest.mark.skipif(not TFJS_JS.is_file(), reason=f"@tensorflow/tfjs not found at {TFJS_JS} (`make test` runs "
                    f"npm install --prefix {TFJS_DIR} @tensorflow/tfjs@4.22.0; set EDGESEG_TFJS_DIR for another place)")
def test_web_model_in_headless_chromium_finds_what_the_saved_model_finds(web_model, saved_model):
    import cv2

    from edgeseg import Runtime
    from edgeseg.eval.verify import match_detections

    img = cv2.imread(str(BUS))
    with Runtime(saved_model) as rt:
        feeds, lb = rt.preprocess(img)
        ref = rt.postprocess(rt.infer(feeds), lb, img)
        t0 = time.perf_counter()
        server = _run_in_chromium(web_model, feeds["images"])
        print(f"tfjs {server.info.get('version')} ({server.info.get('backend')} backend) in headless Chromium: "
              f"{time.perf_counter() - t0:.1f} s (load + one inference)")
        assert not server.error, f"the TF.js page failed: {server.error}"
        assert set(server.outputs) == {"output0", "output1"}
        js = rt.postprocess(server.outputs, lb, img)  # decoded by edgeseg's own postprocess
    assert len(ref) >= 4 and {0, 5} <= set(ref.class_ids.tolist())  # persons and the bus
    pairs = match_detections(ref, js)
    assert len(pairs) == len(ref) == len(js), (ref.class_ids, js.class_ids)
    for i, j in pairs:
        assert ref.class_ids[i] == js.class_ids[j]
        assert np.abs(ref.boxes[i] - js.boxes[j]).max() <= 2.0, (ref.boxes[i], js.boxes[j])
    print(f"TF.js vs SavedModel on bus.jpg: {len(pairs)} detections, max box difference "
          f"{max(np.abs(ref.boxes[i] - js.boxes[j]).max() for i, j in pairs):.4f} px, max score difference "
          f"{max(abs(ref.scores[i] - js.scores[j]) for i, j in pairs):.2e}")
