"""The engine: from a request (`JobSpec`) to a cached `Result`.

`run(spec)` builds the model and data the spec names, looks the Result up in the disk cache (key:
model weights fingerprint, data spec, analysis, parsed options, vitlens version) and computes it on
a miss. The CLI, the dashboard's worker, torchrun ranks and tests all go through `run`. The
analyses themselves are pure functions ``fn(ctx: Context, params: dict) -> Result`` found in the
registry (`vitlens.analyses`); their `Context` (`vitlens.context`) carries the engine's ways out
(sub-requests, partial results keyed by the same recipe as the cache key, model building), so the
engine sits above the analyses and nothing below imports it.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Callable

import pandas as pd
import timm
import torch
import torch.nn as nn

from . import budget, distributed
from .context import Context
from .declarations import CHECKPOINT_NAMES, get_analysis
from .data import load_data
from .device import full_precision, resolve_device
from .errors import VitlensError
from .models import load_checkpoint, load_model, read_checkpoint_metadata
from .models.checkpoints import epoch_files, select_epochs
from .models.registry import check_model_args, list_models
from .models.sizing import size_model
from .progress import Progress, ProgressCallback, cli_progress, current_interrupt, interruptible
from .request import JobSpec
from .result import Result
from .store import ResultCache, model_fingerprint
from .store.keys import Recipe, request_id
from .store.shipped import shipped_result
from .version import __version__

__all__ = ["Context", "JobSpec", "build_model", "cached_result", "request_id", "run"]  # request_id: from store.keys


def build_model(spec: JobSpec, allow_nonfinite: bool = False) -> nn.Module:
    """The model a JobSpec names, with its checkpoint loaded (demo models: shipped weights)."""
    args = check_model_args(spec.model_args)
    size_model(spec.model, args)  # bounds, then a build on the meta device: one line before any memory is used
    shipped = {e.name for e in list_models() if e.pretrained is not None}
    if spec.checkpoint is None and spec.model in shipped and "pretrained" not in args:
        args["pretrained"] = True  # demo models default to their trained weights
    model = load_model(spec.model, **args)
    if spec.checkpoint:
        load_checkpoint(model, spec.checkpoint, allow_nonfinite=allow_nonfinite)
    return model


def check_fits(model: nn.Module, dataset, spec: JobSpec) -> None:
    """One-line errors for data the model cannot take (instead of a failure deep inside torch)."""
    channels = (getattr(model, "pretrained_cfg", None) or {}).get("input_size", (None,))[0]
    first = dataset[0][0]
    if channels and hasattr(first, "shape") and len(first.shape) == 3 and first.shape[0] != channels:
        raise VitlensError(f"{spec.dataset} has {first.shape[0]}-channel images but {spec.model} takes {channels} "
                           f"channels; use data with {channels} channels or --model-args '{{\"in_chans\": "
                           f"{first.shape[0]}}}'")
    outputs = getattr(model, "num_classes", None) or (model.pretrained_cfg or {}).get("num_classes")
    labels = getattr(dataset, "num_classes", None)
    if outputs and labels and labels > outputs:
        raise VitlensError(f"{spec.dataset} has labels up to {labels - 1} but {spec.model} has {outputs} classes; "
                           f"pass --model-args '{{\"num_classes\": {labels}}}'")
    if hasattr(first, "shape"):  # one image through the model: any other mismatch is one line, not a traceback
        shape = "x".join(map(str, first.shape))
        try:
            with torch.no_grad():
                model.eval()(first.unsqueeze(0).to(next(model.parameters(), first).device))
        except (RuntimeError, ValueError, AssertionError, IndexError) as err:
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
            raise VitlensError(f"{spec.model} cannot take {spec.dataset}'s {shape} images: {reason}") from None


def cached_result(spec: JobSpec, cache=None, request: str | None = None) -> Result | None:
    """The Result of SPEC if it was computed before, or shipped with vitlens (`vitlens.store.shipped`;
    no model is built). REQUEST: SPEC's `request_id` when the caller has it already."""
    own = cache is None
    cache = ResultCache() if own else cache
    request = request or request_id(spec)
    try:
        found = cache.get_by_alias(request)
    finally:
        if own:
            cache.close()
    return found if found is not None else shipped_result(request)  # the demo views shipped with vitlens


class CachedPartials:
    """`Context.partial_store`'s store in the result cache (whole entries only)."""

    def __init__(self, cache: ResultCache, key: str, spec: JobSpec, name: str):
        self.cache, self.key, self.spec, self.name = cache, key, spec, name

    def load(self) -> pd.DataFrame | None:
        found = self.cache.get(self.key)
        return None if found is None else found.frame

    def save(self, frame: pd.DataFrame) -> None:
        self.cache.put(self.key, Result(frame, {"analysis": self.spec.analysis, "partial": True}),
                       {"analysis": f"{self.name} (partial)", "model": self.spec.model})

    def drop(self) -> None:
        self.cache.delete(self.key)


def run(spec: JobSpec, use_cache: bool = True, progress: ProgressCallback | None = None,
        verbose: bool = False, cache=None, allow_nonfinite: bool = False,
        interrupt: Callable[[], None] | None = None) -> tuple[Result, bool]:
    """Compute (or fetch from the cache) the Result of SPEC. Returns (result, served_from_cache).
    ALLOW_NONFINITE: load weights and data with NaN/Inf values instead of refusing them (it changes no
    number, so it is not part of the cache key). INTERRUPT: what `progress.checkpoint()` calls inside
    the analysis' long loops (the worker's stop and cancel check; it raises to stop the job)."""
    analysis = get_analysis(spec.analysis)  # looked up once: the recipe and the budget take it
    params = analysis.parse(spec.params)
    device = resolve_device(spec.device)
    recipe = Recipe.of(spec, analysis)  # once per run: it stats every weight file and walks a folder data set
    request = recipe.request_id
    if params.get("checkpoints"):
        return _run_over_checkpoints(spec, params, recipe, use_cache, cache,
                                     dict(progress=progress, verbose=verbose, allow_nonfinite=allow_nonfinite,
                                          interrupt=interrupt))
    params = {k: v for k, v in params.items() if k not in CHECKPOINT_NAMES}  # one model state: the key as ever
    if use_cache and distributed.world()[1] == 1:
        known = cached_result(spec, cache, request)  # asked before: no need to build and fingerprint the model
        if known is not None:
            return known, True
    budget.check(spec, analysis)  # sized on the meta device: over the memory budget is one line, nothing allocated
    with torch.random.fork_rng(devices=[]):  # a model without weights starts the same for the same request
        torch.manual_seed(spec.seed)
        model = build_model(spec, allow_nonfinite)
    fingerprint = model_fingerprint(model)
    key = recipe.key(fingerprint, spec.analysis, params)
    opened: list[ResultCache] = []

    def partials(name: str, keyed: dict) -> CachedPartials | None:
        if not use_cache:
            return None
        try:
            store_cache = cache if cache is not None else ResultCache()
        except VitlensError:
            return None
        if store_cache is not cache:
            opened.append(store_cache)
        return CachedPartials(store_cache, recipe.key(fingerprint, name, keyed), spec, name)

    def compute() -> Result:
        start = time.perf_counter()
        dataset = load_data(spec.dataset, split=spec.split, samples=spec.samples, seed=spec.seed, model=model,
                            allow_nonfinite=allow_nonfinite)
        if len(dataset) == 0:
            raise VitlensError(f"data set {spec.dataset} ({spec.split}) is empty")
        check_fits(model, dataset, spec)
        model.to(device).eval()

        def make_progress(total: float, desc: str) -> Progress:
            if verbose:
                return cli_progress(total, desc, progress)
            return Progress(total, desc, progress)
        ctx = Context(model, dataset, spec, device, make_progress,
                      runner=lambda sub: run(sub, cache=cache)[0],  # sub-results are cached even under --no-cache
                      partials=partials, builder=build_model)
        try:
            # full_precision: every analysis measures in float32 on a GPU too (no TF32 convolutions)
            with interruptible(interrupt or current_interrupt()), full_precision():  # a sub-request keeps its caller's
                result = analysis.fn(ctx, params)
        finally:
            for opened_cache in opened:
                opened_cache.close()
        result.meta.update(spec=spec.to_dict(), params=params, key=key,
                           convention=analysis.convention_of(params),
                           seconds=round(time.perf_counter() - start, 3),
                           versions=_versions(), device=str(device))
        return result

    if distributed.world()[1] > 1:
        return _run_distributed(key, compute, spec, use_cache, cache, request)
    if not use_cache:
        return compute(), False
    own = cache is None
    cache = ResultCache() if own else cache
    try:
        outcome = cache.get_or_compute(key, compute, _info(spec))
        cache.set_alias(request, key)
        return outcome
    finally:
        if own:
            cache.close()


def _run_over_checkpoints(spec: JobSpec, params: dict, recipe: Recipe, use_cache: bool, cache,
                          options: dict) -> tuple[Result, bool]:
    """SPEC's analysis on every chosen epoch_NNN.safetensors of its `checkpoints` folder: each one its
    own request (cached alone: a stopped run keeps the epochs it finished), stacked with an `epoch`
    column; the summary lists each epoch's summary with the checkpoint's saved metrics."""
    if spec.checkpoint:
        raise VitlensError("give --checkpoint (one file) or --checkpoints (a folder of epochs), not both")
    files = dict(epoch_files(params["checkpoints"]))
    chosen = [e for e in select_epochs(params["checkpoint_epochs"], max(files)) if e in files]
    if not chosen:
        raise VitlensError(f"none of the epochs {params['checkpoint_epochs']} is in {params['checkpoints']} "
                           f"(it has {', '.join(map(str, files))})")
    own = {k: v for k, v in spec.params.items() if k not in CHECKPOINT_NAMES}

    def combine() -> Result:
        frames, per_epoch = [], []
        for epoch in chosen:
            sub = replace(spec, checkpoint=str(files[epoch]), params=own)
            result, _ = run(sub, use_cache=use_cache, cache=cache, **options)
            saved = read_checkpoint_metadata(files[epoch])
            frames.append(result.frame.assign(epoch=epoch)[["epoch", *result.frame.columns]])
            per_epoch.append(dict(result.meta.get("summary") or {}, epoch=epoch, checkpoint=files[epoch].name,
                                  test_accuracy=saved.get("test_accuracy"), train_nll=saved.get("train_nll")))
        return Result(pd.concat(frames, ignore_index=True),
                      dict(analysis=spec.analysis, spec=spec.to_dict(), params=params,
                           summary=dict(checkpoints=len(chosen), per_epoch=per_epoch), versions=_versions()))

    if not use_cache or distributed.world()[1] > 1:
        return combine(), False
    own_cache = cache is None
    cache = ResultCache() if own_cache else cache
    try:
        key = recipe.key("over-checkpoints", spec.analysis, params)  # the folder's files are in the recipe
        outcome = cache.get_or_compute(key, combine, _info(spec))
        cache.set_alias(recipe.request_id, key)
        return outcome
    finally:
        if own_cache:
            cache.close()


def _info(spec: JobSpec) -> dict:
    return dict(analysis=spec.analysis, model=spec.model, data=f"{spec.dataset}/{spec.split}",
                spec=json.dumps(spec.to_dict(), sort_keys=True))


def _run_distributed(key: str, compute: Callable[[], Result], spec: JobSpec, use_cache: bool,
                     cache=None, request: str | None = None) -> tuple[Result, bool]:
    """Under torchrun: rank 0 looks in the cache and tells the others; on a miss every rank computes
    its share and rank 0 stores the Result."""
    main = distributed.is_main()
    own = cache is None and main and use_cache
    cache = ResultCache() if own else cache
    try:
        hit = cache.get(key) if (main and use_cache) else None
        if distributed.broadcast(hit is not None):
            # only rank 0 writes anything; the other ranks get an empty Result
            return (hit if main else Result(pd.DataFrame(), {"rank": distributed.world()[0]})), True
        result = compute()
        if main and use_cache:
            cache.put(key, result, _info(spec))
            cache.set_alias(request or request_id(spec), key)
        return result, False
    finally:
        if own:
            cache.close()


def _versions() -> dict:
    return {"vitlens": __version__, "torch": torch.__version__, "timm": timm.__version__}
