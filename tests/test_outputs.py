"""Outputs are never lost: one atomic writer honouring the umask, failed starts that touch nothing,
commits only after output, killed runs that leave the previous file, stale temp files cleaned up,
SIGHUP and a closed stdout pipe handled like Unix tools."""
from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import numpy as np
import pytest
from click.testing import CliRunner

from _assets import IMAGES, MODELS, require_assets
from _mjpeg import free_port, start_mjpeg_server

cv2 = pytest.importorskip("cv2")

from edgeseg.cli import main  # noqa: E402
from edgeseg.errors import InputError  # noqa: E402
from edgeseg.io import AtomicFile, atomic_write, remove_stale_temps  # noqa: E402

MODEL = MODELS / "yolov8n-seg-320-int8dyn.onnx"
BUS = IMAGES / "bus.jpg"
EDGESEG = [sys.executable, "-c", "from edgeseg.cli import main; main(prog_name='edgeseg')"]
OLD = b'{"frame":0,"detections":["what a previous run wrote"]}\n' * 3


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _video(path: Path, n: int = 6) -> Path:
    img = cv2.resize(cv2.imread(str(BUS)), (160, 212))
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 212))
    for i in range(n):
        w.write(np.roll(img, 3 * i, axis=1))
    w.release()
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


# -- the one atomic writer --------------------------------------------------------------------------

@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_file_honours_the_umask(tmp_path: Path, mask: int, expected: int) -> None:
    old = os.umask(mask)
    try:
        f = AtomicFile(tmp_path / "a.json")
        assert _mode(f.tmp) == 0o600  # mkstemp's private temp...
        f.tmp.write_text("x")
        f.commit()
        with atomic_write(tmp_path / "b.json") as tmp:
            tmp.write_text("y")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.json") == expected and _mode(tmp_path / "b.json") == expected  # ...not the result's


def test_atomic_file_discard_leaves_the_old_file_and_no_new_folders(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_bytes(OLD)
    f = AtomicFile(target)
    f.tmp.write_text("half a run")
    f.discard()
    assert target.read_bytes() == OLD and sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]
    f = AtomicFile(tmp_path / "new" / "deeper" / "x.mp4")
    assert (tmp_path / "new" / "deeper").is_dir()
    f.discard()
    assert not (tmp_path / "new").exists()  # the folders made for it go too


@pytest.mark.parametrize("where, message", [
    ("/proc/no-such-dir/x.mp4", "cannot create the folder"),
    ("FILE/x.mp4", "is not a folder"),
])
def test_atomic_file_errors(tmp_path: Path, where: str, message: str) -> None:
    (tmp_path / "FILE").write_text("a file")
    with pytest.raises(InputError, match=message):
        AtomicFile(where.replace("FILE", str(tmp_path / "FILE")), what="--save x")


def test_stale_temps_of_dead_processes_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    dead, alive = _dead_pid(), os.getppid()
    stale = tmp_path / f".out.jsonl.edgeseg-{dead}-abc123.tmp"
    stale_dir = tmp_path / f".out.jsonl.edgeseg-{dead}-olddir"
    running = tmp_path / f".out.jsonl.edgeseg-{alive}-xyz.tmp"
    other = tmp_path / f".frame_000001.jpg.edgeseg-{dead}-q.jpg"
    for p in (stale, running, other):
        p.write_text("partial")
    stale_dir.mkdir()
    assert remove_stale_temps(tmp_path, "out.jsonl") == 2
    assert running.exists() and other.exists() and not stale.exists() and not stale_dir.exists()
    assert remove_stale_temps(tmp_path) == 1 and not other.exists()  # the whole folder (FramesSink)
    assert running.exists()


def test_no_reimplementation_of_the_atomic_writer() -> None:
    """Renames into place live in edgeseg/io.py only (the sinks' private copy made every output 0600)."""
    root = Path(__file__).resolve().parents[1]
    offenders = [str(py.relative_to(root)) for folder in ("edgeseg", "converters", "runtimes", "boards")
                 for py in (root / folder).rglob("*.py")
                 if py.relative_to(root).as_posix() != "edgeseg/io.py"
                 and any(call in py.read_text(encoding="utf-8") for call in ("os.replace(", "os.rename(", ".rename("))]
    assert offenders == []


# -- the real CLI: outputs made with the umask --------------------------------------------------------

def test_outputs_are_created_0644_under_umask_022(tmp_path: Path, umask022) -> None:
    require_assets(MODEL, BUS)
    video = _video(tmp_path / "in.avi", n=4)
    r = CliRunner().invoke(main, ["run", "-m", str(MODEL), "-s", str(video), "--save", str(tmp_path / "o.mp4"),
                                  "--json", str(tmp_path / "o.jsonl"), "-q"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["run", "-m", str(MODEL), "-s", str(video), "--save", str(tmp_path / "frames"), "-q"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["predict", "-m", str(MODEL), "-s", str(BUS), "--save", str(tmp_path / "p.jpg"),
                                  "--json", str(tmp_path / "p.json"), "-q"])
    assert r.exit_code == 0, r.output
    made = [tmp_path / n for n in ("o.mp4", "o.jsonl", "p.jpg", "p.json")] + sorted((tmp_path / "frames").iterdir())
    assert len(made) == 8
    assert {p.name: oct(_mode(p)) for p in made} == {p.name: oct(0o644) for p in made}
    assert _mode(tmp_path / "frames") == 0o755
    assert not list(tmp_path.glob(".*"))


# -- failed starts touch nothing ------------------------------------------------------------------------

def _block_paho(monkeypatch) -> None:
    """paho-mqtt as if it were not installed (an import of it raises ImportError)."""
    for name in [m for m in sys.modules if m == "paho" or m.startswith("paho.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "paho", None)


@pytest.mark.parametrize("case", ["mqtt-without-paho", "save-in-proc", "save-under-a-file", "serve-port-in-use",
                                  "predict-save-in-proc"])
def test_failed_start_leaves_existing_output_byte_for_byte(tmp_path: Path, monkeypatch, case: str) -> None:
    require_assets(MODEL, BUS)
    video = _video(tmp_path / "in.avi", n=3)
    out = tmp_path / "out.jsonl"
    out.write_bytes(OLD)
    (tmp_path / "a_file").write_text("not a folder")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    args, message = {
        "mqtt-without-paho": (["--mqtt", "mqtt://127.0.0.1/edgeseg/t"], "pip install 'edgeseg[mqtt]'"),
        "save-in-proc": (["--save", "/proc/no-such-dir/x.mp4"], "cannot create the folder /proc/no-such-dir"),
        "save-under-a-file": (["--save", str(tmp_path / "a_file" / "x.mp4")], "is not a folder"),
        "serve-port-in-use": (["--serve", f"127.0.0.1:{busy.getsockname()[1]}"], "cannot listen"),
        "predict-save-in-proc": (["--save", "/proc/no-such-dir/x.jpg"], "cannot create the folder /proc/no-such-dir"),
    }[case]
    if case == "mqtt-without-paho":
        _block_paho(monkeypatch)
    command = "predict" if case.startswith("predict") else "run"
    try:
        r = CliRunner().invoke(main, [command, "-m", str(MODEL), "-s", str(BUS if command == "predict" else video),
                                      "--json", str(out), *args, "-q"])
    finally:
        busy.close()
    assert r.exit_code == 1, r.output
    assert out.read_bytes() == OLD  # untouched
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], r.output
    assert "Traceback" not in r.output and not isinstance(r.exception, (AssertionError, TypeError, OSError))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "in.avi", "out.jsonl"]  # no temp files


def test_a_run_without_output_commits_nothing(tmp_path: Path) -> None:
    """An input whose only file is unreadable produces no frame: the old output stays."""
    require_assets(MODEL)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out.jsonl"
    out.write_bytes(OLD)
    r = CliRunner().invoke(main, ["run", "-m", str(MODEL), "-s", str(tmp_path / "broken.jpg"), "--json", str(out),
                                  "--save", str(tmp_path / "o.mp4"), "-q"])
    assert r.exit_code == 0, r.output
    assert out.read_bytes() == OLD and not (tmp_path / "o.mp4").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.jpg", "out.jsonl"]


# -- killed and hung-up runs -------------------------------------------------------------------------

def _wait_for_temp_lines(folder: Path, pattern: str, n: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tmp = list(folder.glob(pattern))
        if tmp and len(tmp[0].read_bytes().splitlines()) >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"no temp file {pattern} with {n} lines appeared")


def test_sigkill_leaves_the_previous_file_and_the_next_run_cleans_up(tmp_path: Path) -> None:
    require_assets(MODEL, BUS)
    out = tmp_path / "live.jsonl"
    out.write_bytes(OLD)
    port = free_port()
    server = start_mjpeg_server(port, BUS, fps=50.0)
    try:
        proc = subprocess.Popen(EDGESEG + ["run", "-m", str(MODEL), "-s", f"http://127.0.0.1:{port}/s.mjpg",
                                           "--json", str(out), "--save", str(tmp_path / "live.avi"), "-q"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait_for_temp_lines(tmp_path, ".live.jsonl.*", 3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        server.kill()
        server.wait()
    assert out.read_bytes() == OLD and not (tmp_path / "live.avi").exists()
    left = sorted(p.name for p in tmp_path.glob(".*"))
    assert len(left) == 2 and all(f".edgeseg-{proc.pid}-" in n for n in left), left  # hidden, never at the target
    video = _video(tmp_path / "in.avi", n=3)
    r = subprocess.run(EDGESEG + ["run", "-m", str(MODEL), "-s", str(video), "--json", str(out),
                                  "--save", str(tmp_path / "live.avi"), "-q"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(out.read_text().splitlines()) == 3  # a complete new file
    assert not list(tmp_path.glob(".*")), "the killed run's temp files were not cleaned up"


def test_sighup_stops_cleanly_and_finalizes_outputs(tmp_path: Path) -> None:
    require_assets(MODEL, BUS)
    out_video, out_json = tmp_path / "live.avi", tmp_path / "live.jsonl"
    port = free_port()
    server = start_mjpeg_server(port, BUS, fps=50.0)
    try:
        proc = subprocess.Popen(EDGESEG + ["run", "-m", str(MODEL), "-s", f"http://127.0.0.1:{port}/s.mjpg",
                                           "--save", str(out_video), "--json", str(out_json), "-q"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_for_temp_lines(tmp_path, ".live.jsonl.*", 5)
        proc.send_signal(signal.SIGHUP)  # an SSH session that drops
        _, err = proc.communicate(timeout=60)
    finally:
        server.kill()
        server.wait()
    assert proc.returncode == 0, err
    assert "SIGHUP received" in err
    lines = out_json.read_text().splitlines()
    cap = cv2.VideoCapture(str(out_video))
    count = 0
    while cap.read()[0]:
        count += 1
    assert len(lines) >= 5 and count == len(lines)
    assert not list(tmp_path.glob(".*"))


@pytest.mark.parametrize("command", ["run", "predict"])
def test_json_to_a_closed_pipe_exits_quietly(tmp_path: Path, command: str) -> None:
    """``edgeseg ... --json - | head -1``: no traceback, no error, status 0, other outputs finalized."""
    require_assets(MODEL, BUS)
    if command == "run":
        src = _video(tmp_path / "in.avi", n=40)
        extra: List[str] = ["--save", str(tmp_path / "o.avi")]
    else:
        src = tmp_path / "imgs"
        src.mkdir()
        small = cv2.resize(cv2.imread(str(BUS)), (160, 212))
        for i in range(40):
            cv2.imwrite(str(src / f"{i:03d}.jpg"), small)
        extra = ["--save", str(tmp_path / "o")]
    proc = subprocess.Popen(EDGESEG + [command, "-m", str(MODEL), "-s", str(src), "--json", "-", "-q", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # the reader goes away, like `head -1`
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert first.strip() and proc.returncode == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err and "Error" not in err, err
    saved = tmp_path / ("o.avi" if command == "run" else "o")
    assert saved.exists() and not list(tmp_path.glob(".*"))
    if command == "run":
        json.loads(first)  # JSON lines: the first line is a whole record
