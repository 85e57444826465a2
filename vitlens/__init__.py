"""vitlens: the analyses of Park & Kim, "How Do Vision Transformers Work?" (ICLR 2022) as a library.

    import vitlens
    model = vitlens.load_model("demo_vit", pretrained=True)
    for block in vitlens.blocks(model): print(block.name, block.kind, block.stage)
    result = vitlens.run("fourier", model="demo_vit", samples=256)   # see vitlens.api
"""
from .version import __version__
from .errors import VitlensError
from .models import (Block, blocks, check_blocks, describe_blocks, feature_map, list_models, load_checkpoint,
                     load_model, read_checkpoint_metadata, run_blocks, save_checkpoint)
from .result import Result
from .api import compare, reference, run  # noqa: E402  (the notebook API: vitlens.run("fourier", ...))
from .experiments import experiment  # noqa: E402  (vitlens.experiment("data-size-tiny").run().table())

__all__ = ["__version__", "VitlensError", "Block", "blocks", "check_blocks", "describe_blocks", "feature_map",
           "list_models", "load_checkpoint", "load_model", "read_checkpoint_metadata", "run_blocks",
           "save_checkpoint", "Result", "compare", "reference", "run", "experiment"]
