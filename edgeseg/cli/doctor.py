"""``edgeseg doctor``: Python, OS, board, backends, delegates, OpenCV build and cameras."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Read /proc, /sys, /dev and /etc under this folder instead of / (for checking a fixture tree).")
def doctor(as_json: bool, root: Optional[Path]) -> None:
    """Show what this machine can run: Python and OS, the board detected, every backend with its
    version (or why it is missing), the Edge TPU library, ONNX Runtime execution providers,
    OpenVINO devices, OpenCV's build (GUI, GStreamer, FFmpeg) and the cameras found.

    Never fails: a probe that breaks is shown with its error.

    \b
    Examples:
      edgeseg doctor
      edgeseg doctor --json > doctor.json
    """
    from ..tools.doctor import collect, format_report

    report = collect(root if root is not None else "/")
    click.echo(json.dumps(report, indent=2, default=str) if as_json else format_report(report))
