"""Models: the registry and factory, AlterNet, block decomposition and checkpoints."""
from .blocks import KINDS, Block, blocks, check_blocks, describe_blocks, feature_map, run_blocks
from .checkpoints import load_checkpoint, read_checkpoint_metadata, read_state_dict, save_checkpoint
from .registry import list_models, load_model, register_model
from . import zoo  # noqa: F401  (registers the built-in models: registry does not import zoo, zoo imports it)

__all__ = ["KINDS", "Block", "blocks", "check_blocks", "describe_blocks", "feature_map", "run_blocks",
           "load_checkpoint", "read_checkpoint_metadata", "read_state_dict", "save_checkpoint",
           "list_models", "load_model", "register_model"]
