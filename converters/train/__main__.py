"""``python -m edgeseg.converters.train`` / ``torchrun ... -m edgeseg.converters.train``: the
options of ``edgeseg train`` (each torchrun process runs this; DDP is set up from its environment)."""
from edgeseg.cli.train import train

if __name__ == "__main__":
    train(prog_name="python -m edgeseg.converters.train")
