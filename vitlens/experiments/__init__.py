"""Experiments: a grid of training runs declared once (`declaration`), run on the job queue and read
back as one table across runs (`sweep`). Presets ship in `presets/`."""
from .declaration import Cell, Experiment, parse, preset_names
from .sweep import Sweep, experiment, save_table

__all__ = ["Cell", "Experiment", "Sweep", "experiment", "parse", "preset_names", "save_table"]
