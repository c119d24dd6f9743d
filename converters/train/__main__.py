"""``python -m edgeseg.converters.train`` / ``torchrun ... -m edgeseg.converters.train``.

Every :class:`~.trainer.TrainConfig` field is an option with the same name and default as in
``edgeseg train`` (``--warmup-epochs 0``, ``--no-val``, ``--cos-lr``, ...), plus ``--resume [LAST.PT]``
and ``-q``. Each torchrun process runs this; DDP is set up from torchrun's environment.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import MISSING, fields
from typing import List, Optional

from edgeseg.errors import EdgesegError

from .trainer import TrainConfig, train


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m edgeseg.converters.train", description=__doc__.splitlines()[0])
    for f in fields(TrainConfig):
        if f.name in ("verbose", "augment", "gains"):
            continue
        default = f.default if f.default is not MISSING else None
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            p.add_argument(flag, type=type(default) if isinstance(default, (int, float)) else str, default=default)
    p.add_argument("--resume", nargs="?", const="", default=None, metavar="LAST.PT")
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = vars(parser().parse_args(argv))
    resume, quiet = args.pop("resume"), args.pop("quiet")
    try:
        if resume is not None:
            result = train(resume=resume or os.path.join(args["project"], args["name"]), device=args["device"],
                           workers=args["workers"], nproc=args["nproc"], verbose=not quiet)
        else:
            result = train(verbose=not quiet, **args)
    except EdgesegError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    if os.environ.get("RANK", "0") == "0":
        print(f"{result.stopped}: best epoch {result.best_epoch} -> {result.best}; last: {result.last}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
