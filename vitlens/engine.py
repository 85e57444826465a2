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

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable

import pandas as pd
import timm
import torch
import torch.nn as nn

from . import __version__, budget, distributed
from .analyses import Analysis, get_analysis
from .cache import ResultCache, cache_key, model_fingerprint
from .context import Context
from .data import load_data
from .device import full_precision, resolve_device
from .errors import VitlensError
from .models import load_checkpoint, load_model
from .models.checkpoints import SUFFIXES
from .models.registry import check_model_args, list_models
from .models.sizing import size_model
from .progress import Progress, ProgressCallback, cli_progress, current_interrupt, interruptible
from .request import JobSpec
from .result import Result
from .shipped import shipped_result

__all__ = ["Context", "JobSpec", "build_model", "cached_result", "request_id", "run"]


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


def resolve_params(analysis: Analysis, params: dict) -> dict:
    """SPEC's options, parsed and checked against the analysis' declaration, defaults filled in."""
    return analysis.parse(params)


def _file_stats(path) -> list | None:
    """[name, size, mtime_ns] of the weight file PATH, or of every weight file in the folder PATH."""
    try:
        path = Path(path).expanduser()
        files = sorted(f for f in path.iterdir() if f.name.endswith(SUFFIXES)) if path.is_dir() else [path]
        return [[f.name, (st := os.stat(f)).st_size, st.st_mtime_ns] for f in files]
    except OSError:
        return None


def referenced_files(spec: JobSpec) -> dict:
    """Size and time of every weight file the request reads besides the model spec's own weights
    (the options declared with path=True: --checkpoints folders, a trajectory, a path endpoint).
    Part of the request id and the cache key, so a retrained folder gives a new Result."""
    names = [o.name for o in get_analysis(spec.analysis).options if o.path] if spec.analysis else []
    return {name: _file_stats(spec.params[name]) for name in names if spec.params.get(name)}


def data_files(dataset: str) -> str | None:
    """A digest of the name, size and time of every file behind a `tensors:`/`folder:` data spec, so
    relabelled or replaced data gives a new Result (None for the named data sets)."""
    kind, _, path = dataset.partition(":")
    if kind not in ("tensors", "folder") or not path:
        return None
    root = Path(path).expanduser()
    digest = hashlib.sha256()
    try:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            st = f.stat()
            digest.update(f"{f.relative_to(root) if f != root else f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    except OSError:
        return None
    return digest.hexdigest()


def request_id(spec: JobSpec) -> str:
    """A hash of what the user asked for (the spec, plus the size and time of every weight file it reads).

    Identical requests share it: they join one running job and find its Result through a cache
    alias without rebuilding the model. The cache key itself also covers the weights."""
    payload = dict(spec.to_dict(), vitlens=__version__)  # shipped weights change only with the version
    if spec.checkpoint:
        payload["checkpoint_stat"] = _file_stats(spec.checkpoint)
    payload["files"] = referenced_files(spec)
    payload["data_files"] = data_files(spec.dataset)
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def cached_result(spec: JobSpec, cache=None, request: str | None = None) -> Result | None:
    """The Result of SPEC if it was computed before, or shipped with vitlens (`vitlens.shipped`; no
    model is built). REQUEST: SPEC's `request_id` when the caller has it already."""
    own = cache is None
    cache = ResultCache() if own else cache
    request = request or request_id(spec)
    try:
        found = cache.get_by_alias(request)
    finally:
        if own:
            cache.close()
    return found if found is not None else shipped_result(request)  # the demo views shipped with vitlens


def recipe_key(fingerprint: str, spec: JobSpec, name: str, params: dict) -> str:
    """The cache key of what NAME computes under PARAMS on SPEC's data with the model of FINGERPRINT:
    the final Result's key (NAME = the analysis) and its partial results' (`Context.partial_store`)."""
    data_spec = dict(dataset=spec.dataset, split=spec.split, samples=spec.samples, seed=spec.seed,
                     batch_size=spec.batch_size, files=data_files(spec.dataset))
    return cache_key(fingerprint, data_spec, name,
                     dict(params, model=spec.model, model_args=spec.model_args, files=referenced_files(spec)))


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
    analysis = get_analysis(spec.analysis)
    params = resolve_params(analysis, spec.params)
    device = resolve_device(spec.device)
    request = request_id(spec)  # once per run: it stats every weight file and walks a folder data set
    if use_cache and distributed.world()[1] == 1:
        known = cached_result(spec, cache, request)  # asked before: no need to build and fingerprint the model
        if known is not None:
            return known, True
    budget.check(spec)  # sized on the meta device: over the memory budget is one line, nothing allocated
    model = build_model(spec, allow_nonfinite)
    fingerprint = model_fingerprint(model)
    key = recipe_key(fingerprint, spec, spec.analysis, params)
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
        return CachedPartials(store_cache, recipe_key(fingerprint, spec, name, keyed), spec, name)

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
