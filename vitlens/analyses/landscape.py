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
`vitlens.landscape.surface`.

Resumable: while it runs, the rows computed so far are stored every few seconds in the result
cache under a key derived from everything that decides the numbers (model weights, data spec,
parameters; the same ingredients as the final Result's key, with analysis name
"landscape:partial"). Running the same command again after an interruption continues from those
rows; the partial entry is deleted when the grid is complete. ``--resume false`` ignores it.
"""
from __future__ import annotations

import math

import numpy as np

from .. import distributed
from ..errors import VitlensError
from ..result import Result
from . import Context, register_analysis

DIRECTION_KINDS = ("random", "hessian", "trajectory", "path")

DEFAULTS = {
    "directions": "random",
    "normalization": "auto",
    "include_bias_norm": False,
    "include_pos_embed": False,
    "direction_seed": None,  # None: the job's --seed
    "grid": 21,
    "range": 1.0,
    "x_min": None, "x_max": None, "y_min": None, "y_max": None,
    "weight_decay": 5e-2,  # `vitlens train`'s default and the paper's AdamW setting for ViTs
    "l2": "paper",
    "augment": None,
    "mixup": 0.0, "cutmix": 0.0, "label_smoothing": 0.0,
    "tolerance": 0.0, "rtol": 0.0, "z": 3.0, "min_batches": 2, "min_samples": 128, "anchors": 5,
    "radius": None,
    "trajectory": None,
    "endpoint": None,
    "resume": True,
}


def _number(params: dict, name: str, allow_none: bool = False):
    value = params[name]
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise VitlensError(f"--{name.replace('_', '-')} must be a finite number, got {value!r}")
    return float(value)


def _flag(params: dict, name: str) -> bool:
    value = params[name]
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    if not isinstance(value, (bool, int)):
        raise VitlensError(f"--{name.replace('_', '-')} must be true or false, got {value!r}")
    return bool(value)


def _axes(params: dict, kind: str, info: dict):
    from ..landscape import grid_axis
    grid = params["grid"]
    span = _number(params, "range")
    if span <= 0:
        raise VitlensError(f"--range must be > 0 (the grid covers [-range, range]), got {span}")
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
        lo, hi = _number(params, f"{axis}_min", True), _number(params, f"{axis}_max", True)
        lows[axis] = lows[axis] if lo is None else lo
        highs[axis] = highs[axis] if hi is None else hi
    xs = grid_axis(grid, lows["x"], highs["x"], "grid")
    ys = None if kind == "path" else grid_axis(grid, lows["y"], highs["y"], "grid")
    return xs, ys


def _directions(ctx: Context, params: dict, samples, seed: int):
    from ..landscape import (direction_norm, hessian_directions, normalize_direction, path_direction,
                             random_directions, trajectory_directions)
    kind = params["directions"]
    if kind not in DIRECTION_KINDS:
        raise VitlensError(f"unknown --directions '{kind}'; choose from {', '.join(DIRECTION_KINDS)}")
    normalization = params["normalization"]
    if normalization == "auto":
        normalization = "filter" if kind == "random" else "none"
    model = ctx.model
    info = {"kind": kind, "normalization": normalization}
    if kind == "random":
        directions = random_directions(model, 2, seed, normalization, _flag(params, "include_bias_norm"),
                                       _flag(params, "include_pos_embed"))
    elif kind == "hessian":
        batches = [(x, t) for x, t, _ in samples.batches]
        directions, eigenvalues = hessian_directions(model, batches, 2, _number(params, "weight_decay"), seed)
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


def _partial_store(ctx: Context, params: dict):
    """(load, save, drop) for the partial grid in the result cache, or None when there is no cache."""
    from ..cache import ResultCache, cache_key, model_fingerprint
    spec = ctx.spec
    try:
        cache = ResultCache()
    except VitlensError:
        return None
    data_spec = dict(dataset=spec.dataset, split=spec.split, samples=spec.samples, seed=spec.seed,
                     batch_size=spec.batch_size)
    keyed = {k: v for k, v in params.items() if k != "resume"}
    key = cache_key(model_fingerprint(ctx.model), data_spec, "landscape:partial",
                    dict(keyed, model=spec.model, model_args=spec.model_args))

    def load():
        found = cache.get(key)
        return None if found is None else found.frame

    def save(frame):
        cache.put(key, Result(frame, {"analysis": "landscape", "partial": True}),
                  {"analysis": "landscape (partial)", "model": spec.model})

    def drop():
        cache.delete(key)
        cache.close()

    return load, save, drop


@register_analysis("landscape", "loss surface along two directions or a 1D path (filter-normalised, Li et al. 2018)",
                   defaults=DEFAULTS)
def landscape(ctx: Context, params: dict) -> Result:
    import pandas as pd

    from ..data import load_data
    from ..landscape import loss_surface, prepare_samples, sharpness

    spec = ctx.spec
    seed = int(spec.seed if params["direction_seed"] is None else params["direction_seed"])
    dataset = ctx.dataset
    if params["augment"]:
        dataset = load_data(spec.dataset, split=spec.split, samples=spec.samples, seed=spec.seed,
                            model=ctx.model, augment=params["augment"])
    num_classes = getattr(dataset, "num_classes", None) or getattr(ctx.model, "num_classes", None)
    samples = prepare_samples(dataset, spec.batch_size, spec.seed, shuffle=True, num_classes=num_classes,
                              mixup=_number(params, "mixup"), cutmix=_number(params, "cutmix"),
                              label_smoothing=_number(params, "label_smoothing"), device=ctx.device)
    kind, directions, direction_info = _directions(ctx, params, samples, seed)
    xs, ys = _axes(params, kind, direction_info)

    rank, ranks = distributed.world()
    # resuming reads one cache; under torchrun the ranks share the grid instead
    store = _partial_store(ctx, params) if _flag(params, "resume") and ranks == 1 else None
    done = store[0]() if store else None
    total = len(xs) * (1 if ys is None else len(ys))
    progress = ctx.progress(total, "landscape")
    if done is not None and len(done):
        progress.update(len(done), f"resumed {len(done)} points")
    frame, info = loss_surface(
        ctx.model, samples, directions, xs, ys,
        weight_decay=_number(params, "weight_decay"), l2=params["l2"],
        tolerance=_number(params, "tolerance"), rtol=_number(params, "rtol"), z=_number(params, "z"),
        min_batches=int(params["min_batches"]), min_samples=int(params["min_samples"]),
        anchors=int(params["anchors"]), done=done,
        on_checkpoint=store[1] if store else None, progress=progress, share=(rank, ranks))
    if ranks > 1:  # every rank computed a share of the points: put the grid back together
        frame = pd.concat(distributed.gather(frame), ignore_index=True).sort_values(["j", "i"], ignore_index=True)
        info = dict(info, points=len(frame), ranks=ranks)
    if store:
        store[2]()
    summary = sharpness(frame, _number(params, "radius", True))
    summary.update(points=info["points"], sample_fraction=info["sample_fraction"],
                   resumed_points=info["resumed_points"])
    bad = frame[~frame["finite"].astype(bool)]
    meta = {"analysis": "landscape", "summary": summary, "directions": direction_info, "evaluation": info,
            "dims": 1 if ys is None else 2,
            "nonfinite": [[float(x), float(y)] for x, y in zip(bad["x"][:100], bad["y"][:100])]}
    return Result(pd.DataFrame(frame), meta)
