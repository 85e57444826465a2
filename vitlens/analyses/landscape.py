"""Loss landscape: the loss on a 2D grid along two directions, or along a 1D path (paper Fig 1).

    vitlens run landscape --model demo_resnet --grid 21 --range 1.0 --out surface.csv
    vitlens run landscape --model demo_resnet --checkpoint run/epoch_001.safetensors \
        --directions path --endpoint run/epoch_010.safetensors --grid 41 --out path.csv

Directions (``--directions``): ``random`` (two seeded Gaussians, filter-normalised as Li et al.
2018 by default; ``--normalization filter_paper|layer|model|none``), ``hessian`` (top-2 Hessian
eigenvectors, when ``vitlens.hessian`` is installed), ``trajectory`` (PCA of the checkpoints in
``--trajectory FOLDER`` around the loaded model) and ``path`` (1D, from the loaded model at x=0 to
``--endpoint CHECKPOINT`` at x=1). ``--normalization auto`` is ``filter`` for random directions and
``none`` (their natural scale) for the others.

The loss at each point is NLL + weight_decay * L2 as in Park & Kim's notebook (``--l2 paper``: sum
of each parameter tensor's norm; ``half_squared``: 0.5 ||w||^2), eval mode, on the chosen split
(``--split train --augment crop_flip --mixup 0.8`` for the paper's augmented training set). One
row per point: i, j, x, y, loss, nll, l2, accuracy, samples, stderr, finite. The summary holds the
sharpness measures (curvature at the centre along each axis, loss rise within ``--radius``).

Statistical mode: ``--tolerance T`` (and/or ``--rtol R``) evaluates a coarse sub-grid of anchor
points exactly (``--anchors`` per axis, default 5, plus the centre) and stops every other point
once z * its standard error (z = ``--z``, default 3; regression estimator with the cell's anchors
as controls) is below max(T, R * |loss|) at two checks in a row, after at least ``--min-samples``
samples (default 128): each point is then within that bound of the full evaluation with about
99.7% confidence (a little less in practice; ``--z 4`` for the whole grid at once). See
`vitlens.landscape.estimator`.

Resumable: while it runs, the rows computed so far are stored every few seconds in the result
cache under a key derived from everything that decides the numbers (model weights, data spec,
parameters; the same ingredients as the final Result's key, with analysis name
"landscape:partial"). Running the same command again after an interruption continues from those
rows; the partial entry is deleted when the grid is complete. ``--resume false`` ignores it.

``--points-per-pass N`` (exact mode) evaluates N grid points with one batched forward pass per
batch (vmap over the moved weights stacked per point); the default 0 chooses: 1 on the CPU, where
it does not pay, and on a GPU whatever a short probe on the first batch finds fastest. The Result's
``evaluation.points_per_pass`` gives the choice.
"""
from __future__ import annotations


import numpy as np
import pandas as pd

from .. import distributed
from ..context import Context
from ..errors import VitlensError
from ..landscape import (L2_KINDS, MAX_GRID, NORMALIZATIONS, direction_norm, grid_axis, hessian_directions,
                         loss_surface, normalize_direction, path_direction, prepare_samples, random_directions,
                         sharpness, trajectory_directions)
from ..options import Limit, Option, convention_option, loss_options
from ..result import Result
from . import Figure, Memory, Page, register_analysis

DIRECTION_KINDS = ("random", "hessian", "trajectory", "path")

OPTIONS = [
    convention_option("random directions normalised along dim 0 as the authors' normalize_filter (filter_paper)",
                      "Li et al. 2018's filter normalisation (each output filter rescaled)"),
    Option("directions", str, "random", "two random directions, top-2 Hessian eigenvectors, a PCA of training "
           "checkpoints, or the straight path to --endpoint", choices=DIRECTION_KINDS),
    Option("normalization", str, "auto", "direction scaling (auto: the convention's rule for random directions, "
           "none for the others)", choices=("auto", *NORMALIZATIONS)),
    Option("include_bias_norm", bool, False, "also move biases and normalisation parameters"),
    Option("include_pos_embed", bool, False, "also move position embeddings / relative-position tables"),
    Option("direction_seed", int, None, "seed of the random directions (none: the job's --seed)", nullable=True,
           low=0),
    Option("grid", int, 21, "points per axis (paper: 21)", low=2, high=MAX_GRID,
           limit=Limit("VITLENS_MAX_GRID", 51)),
    Option("range", float, 1.0, "the grid covers [-range, range] along each direction", low=1e-9, high=1e6),
    *[Option(f"{axis}_{end}", float, None, f"override the grid's {end}imum {axis}", nullable=True)
      for axis in ("x", "y") for end in ("min", "max")],
    *loss_options(weight_decay=5e-2),
    Option("l2", str, "paper", "the weight term: paper = sum of each tensor's norm (the authors'), half_squared = "
           "0.5 ||w||^2", choices=L2_KINDS),
    Option("tolerance", float, 0.0, "statistical mode: stop a point once z*stderr <= tolerance (0 = exact)", low=0.0),
    Option("rtol", float, 0.0, "statistical mode: ... or <= rtol * |loss|", low=0.0),
    Option("z", float, 3.0, "statistical mode: confidence multiplier", low=0.1, high=20.0),
    Option("min_batches", int, 2, "statistical mode: batches at least", low=1),
    Option("min_samples", int, 128, "statistical mode: samples at least", low=1),
    Option("anchors", int, 5, "statistical mode: exact anchor points per axis", low=2, high=MAX_GRID),
    Option("radius", float, None, "sharpness: loss rise within this radius (none: a tenth of the range)",
           nullable=True, low=0.0),
    Option("trajectory", str, None, "folder of training checkpoints (directions trajectory)", nullable=True,
           path=True),
    Option("endpoint", str, None, "checkpoint at the path's end (directions path)", nullable=True, path=True),
    Option("points_per_pass", int, 0, "exact mode: grid points per batched (vmap) forward pass; 0 = choose (a "
           "quick probe on a GPU, 1 on the CPU)", low=0, high=64),
    Option("resume", bool, True, "continue an interrupted grid from the points already cached"),
]


def _axes(params: dict, kind: str, info: dict):
    grid, span = params["grid"], params["range"]
    lows = {"x": -span, "y": -span}
    highs = {"x": span, "y": span}
    if kind == "path":
        lows["x"], highs["x"] = 0.0, 1.0
    if kind == "trajectory":  # cover the trajectory with a margin
        coords = np.abs(np.asarray(info["coordinates"]))
        for axis, k in (("x", 0), ("y", 1)):
            reach = float(coords[:, k].max()) * 1.2 or span
            lows[axis], highs[axis] = -reach, reach
    for axis in ("x", "y"):
        lo, hi = params[f"{axis}_min"], params[f"{axis}_max"]
        lows[axis] = lows[axis] if lo is None else lo
        highs[axis] = highs[axis] if hi is None else hi
    xs = grid_axis(grid, lows["x"], highs["x"], "grid")
    ys = None if kind == "path" else grid_axis(grid, lows["y"], highs["y"], "grid")
    return xs, ys


def _directions(ctx: Context, params: dict, samples, seed: int):
    kind = params["directions"]
    normalization = params["normalization"]
    if normalization == "auto":
        paper_rule = "filter_paper" if params["convention"] == "paper" else "filter"
        normalization = paper_rule if kind == "random" else "none"
    model = ctx.model
    info = {"kind": kind, "normalization": normalization}
    if kind == "random":
        directions = random_directions(model, 2, seed, normalization, params["include_bias_norm"],
                                       params["include_pos_embed"])
    elif kind == "hessian":
        batches = [(x, t) for x, t, _ in samples.batches]
        directions, eigenvalues = hessian_directions(model, batches, 2, params["weight_decay"], seed)
        info["eigenvalues"] = eigenvalues
    elif kind == "trajectory":
        if not params["trajectory"]:
            raise VitlensError("--directions trajectory needs --trajectory FOLDER (checkpoints of a training run)")
        directions, extra = trajectory_directions(model, params["trajectory"], 2)
        info.update(extra)
    else:
        if not params["endpoint"]:
            raise VitlensError("--directions path needs --endpoint CHECKPOINT (the path's end at x = 1)")
        directions = [path_direction(model, params["endpoint"])]
    if kind != "random" and normalization != "none":
        params_now = dict(model.named_parameters())
        directions = [normalize_direction(d, params_now, normalization) for d in directions]
    info["norms"] = [direction_norm(d) for d in directions]
    return kind, directions, info


@register_analysis("landscape", "loss surface along two directions or a 1D path (filter-normalised, Li et al. 2018)",
                   OPTIONS, conventions="loss = per-sample mean NLL (log_softmax) + weight_decay * L2, eval mode",
                   lane="heavy", shards="grid points",
                   page=Page("Loss landscape", "Loss_landscape", 2, custom=True,
                             options=("convention", "directions", "grid", "range", "weight_decay"),
                             labels={"grid": "grid points per axis (paper: 21)",
                                     "range": "range (± along each direction)", "weight_decay": "weight decay in the loss"},
                             widget_args={"range": {"step": 0.1}, "weight_decay": {"step": 0.01}},
                             caption=("The loss (NLL + weight decay · L2, as in the paper) at w + x·d1 + y·d2 for two "
                                      "random Gaussian directions, each filter rescaled to the norm of the weight's "
                                      "filter (Li et al. 2018); biases, norm parameters and position embeddings are "
                                      "not moved. The paper finds MSAs flatten the landscape: ViTs' surfaces are "
                                      "smoother and flatter near the optimum than ResNets'.")),
                   figures=[Figure("surface", when={"directions": ("random", "hessian", "trajectory")}),
                            Figure("path_curve", when={"directions": ("path",)})],
                   # the model, two directions and the moved copy (x points per pass); every sample on the device
                   memory=Memory(weights=4, working=3, data=1, more=lambda p: 2 * max(p["points_per_pass"], 1) - 2))
def landscape(ctx: Context, params: dict) -> Result:
    spec = ctx.spec
    seed = spec.seed if params["direction_seed"] is None else params["direction_seed"]
    dataset = ctx.augmented(params["augment"])
    num_classes = getattr(dataset, "num_classes", None) or getattr(ctx.model, "num_classes", None)
    samples = prepare_samples(dataset, spec.batch_size, spec.seed, shuffle=True, num_classes=num_classes,
                              mixup=params["mixup"], cutmix=params["cutmix"],
                              label_smoothing=params["label_smoothing"], device=ctx.device)
    kind, directions, direction_info = _directions(ctx, params, samples, seed)
    xs, ys = _axes(params, kind, direction_info)

    rank, ranks = distributed.world()
    # resuming reads one cache; under torchrun the ranks share the grid instead
    keyed = {k: v for k, v in params.items() if k not in ("resume", "points_per_pass")}  # neither moves a number
    store = ctx.partial_store("landscape:partial", keyed) if params["resume"] and ranks == 1 else None
    done = store.load() if store else None
    total = len(xs) * (1 if ys is None else len(ys))
    progress = ctx.progress(total, "landscape")
    if done is not None and len(done):
        progress.update(len(done), f"resumed {len(done)} points")
    frame, info = loss_surface(
        ctx.model, samples, directions, xs, ys,
        weight_decay=params["weight_decay"], l2=params["l2"], tolerance=params["tolerance"], rtol=params["rtol"],
        z=params["z"], min_batches=params["min_batches"], min_samples=params["min_samples"],
        anchors=params["anchors"], done=done,
        on_checkpoint=store.save if store else None, progress=progress, share=(rank, ranks),
        points_per_pass=params["points_per_pass"])
    if ranks > 1:  # every rank computed a share of the points: put the grid back together
        frame = pd.concat(distributed.gather(frame), ignore_index=True).sort_values(["j", "i"], ignore_index=True)
        info = dict(info, points=len(frame), ranks=ranks)
    if store:
        store.drop()
    summary = sharpness(frame, params["radius"])
    summary.update(points=info["points"], sample_fraction=info["sample_fraction"],
                   resumed_points=info["resumed_points"])
    bad = frame[~frame["finite"].astype(bool)]
    meta = {"analysis": "landscape", "summary": summary, "directions": direction_info, "evaluation": info,
            "dims": 1 if ys is None else 2,
            "nonfinite": [[float(x), float(y)] for x, y in zip(bad["x"][:100], bad["y"][:100])]}
    return Result(pd.DataFrame(frame), meta)
