"""The ``edgeseg`` command line: a thin layer over the library.

Commands are registered lazily in :data:`COMMANDS` (name -> "module:attribute") so that
``edgeseg --help`` and each command start without importing what other commands need.
"""
from __future__ import annotations

import importlib
from typing import Any, Dict, List, Optional

import click

from .._version import __version__

#: one line per command: name -> "module:click command object"
COMMANDS: Dict[str, str] = {
    "predict": "edgeseg.cli.predict:predict",
    "info": "edgeseg.cli.info:info",
    "convert": "edgeseg.cli.convert:convert",
    "verify": "edgeseg.cli.verify:verify",
    "val": "edgeseg.cli.val:val",
    "data": "edgeseg.cli.data:data",
    "train": "edgeseg.cli.train:train",
    "run": "edgeseg.cli.run:run",
    "boards": "edgeseg.cli.boards:boards",
    "bench": "edgeseg.cli.bench:bench",
    "doctor": "edgeseg.cli.doctor:doctor",
}


class LazyGroup(click.Group):
    """A click group that imports a command's module only when that command is used."""

    def list_commands(self, ctx: click.Context) -> List[str]:
        # every registered command is listed; a command module that fails to import is a bug and
        # raises when the command is used (never silently disappears from --help)
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> Optional[click.Command]:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attr = target.split(":")
        cmd: Any = getattr(importlib.import_module(module), attr)
        return cmd


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeseg")
def main() -> None:
    """edgeseg: YOLO instance segmentation on edge devices, without torch.

    \b
    Examples:
      edgeseg info --model yolov8n-seg.onnx
      edgeseg predict --model yolov8n-seg.tflite --source bus.jpg --save out/
      edgeseg run --model yolov8n-seg.tflite --camera 0 --serve 8080

    Run `edgeseg COMMAND --help` for the options and an example of each command.
    """
