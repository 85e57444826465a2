"""Loss landscapes: filter-normalised 2D surfaces and 1D paths (Li et al. 2018; Park & Kim 2022, Fig 1).

    from vitlens.landscape import random_directions, prepare_samples, loss_surface, grid_axis, sharpness
    d1, d2 = random_directions(model, 2, seed=0)               # Li et al. filter normalisation
    samples = prepare_samples(dataset, batch_size=64, seed=0)
    xs = grid_axis(21, -1, 1)
    frame, info = loss_surface(model, samples, [d1, d2], xs, xs, weight_decay=5e-2)
    print(sharpness(frame, radius=0.5))

`directions` builds directions (random, Hessian eigenvectors, trajectory PCA, straight path);
`surface` evaluates them on a grid in place (no model copies), with `samples` (the data, prepared
once), `offsets` (the weights moved in place), `estimator` (one point, exact or in statistical
mode) and `sharpness` (summaries of the grid).
The `landscape` analysis (`vitlens run landscape ...`) wires both to the CLI and the cache.
"""
from .directions import (EMBEDDING_PATTERNS, NORMALIZATIONS, check_direction, checkpoint_files, direction_norm,
                         hessian_directions, normalize_direction, path_direction, random_direction,
                         random_directions, trajectory_directions)
from .estimator import PointEvaluator
from .offsets import L2_KINDS, WeightOffsets, eval_mode, l2_term
from .samples import Samples, per_sample_nll, prepare_samples
from .sharpness import sharpness
from .surface import COLUMNS, MAX_GRID, anchor_indices, grid_axis, loss_surface

__all__ = ["EMBEDDING_PATTERNS", "NORMALIZATIONS", "check_direction", "checkpoint_files", "direction_norm",
           "hessian_directions", "normalize_direction", "path_direction", "random_direction", "random_directions",
           "trajectory_directions", "COLUMNS", "L2_KINDS", "MAX_GRID", "PointEvaluator", "Samples",
           "WeightOffsets", "anchor_indices", "eval_mode", "grid_axis", "l2_term", "loss_surface",
           "per_sample_nll", "prepare_samples", "sharpness"]
