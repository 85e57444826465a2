"""`Context`: what an analysis function gets, and its only way out.

An analysis is ``fn(ctx: Context, params: dict) -> Result``. The context holds the model (eval
mode, on its device), the data and the request, and offers the two ways an analysis reaches beyond
itself, both provided by the engine that calls it:
  * `ctx.run(spec)`: the Result of another request (a sub-request, cached like any other; findings);
  * `ctx.partial_store(name, params)`: load/save/drop of partial results keyed by the same recipe
    as the engine's cache key (the landscape's resumable grid);
  * `ctx.build_model(spec)`: the model another request names (findings' block table).
So no analysis imports the engine or the cache, and the engine sits above the analyses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import pandas as pd
import torch
import torch.nn as nn

from .data import load_data, make_loader
from .errors import VitlensError
from .features import collect
from .progress import Progress
from .request import JobSpec
from .result import Result


class PartialStore(Protocol):
    """Partial results of one computation (e.g. the grid points done so far)."""

    def load(self) -> pd.DataFrame | None: ...
    def save(self, frame: pd.DataFrame) -> None: ...
    def drop(self) -> None: ...


@dataclass
class Context:
    """The model (eval mode, on device), the data, the request, progress and the ways out."""

    model: nn.Module
    dataset: torch.utils.data.Dataset
    spec: JobSpec
    device: torch.device
    progress: Callable[[float, str], Progress]
    runner: Callable[[JobSpec], Result] | None = None
    partials: Callable[[str, dict], PartialStore | None] | None = None
    builder: Callable[[JobSpec], nn.Module] | None = None

    def run(self, spec: JobSpec) -> Result:
        """The Result of the sub-request SPEC (from the cache, or computed and cached)."""
        if self.runner is None:
            raise VitlensError(f"{self.spec.analysis} needs sub-requests, which this context cannot run")
        return self.runner(spec)

    def partial_store(self, name: str, params: dict) -> PartialStore | None:
        """Where partial results of this request under the options PARAMS go (None: nowhere, e.g.
        without a cache); NAME tells them apart from the final Result."""
        return None if self.partials is None else self.partials(name, params)

    def build_model(self, spec: JobSpec) -> nn.Module:
        """The model (with its weights) that SPEC names."""
        if self.builder is None:
            raise VitlensError(f"{self.spec.analysis} needs to build models, which this context cannot")
        return self.builder(spec)

    def augmented(self, augment: str | None):
        """The job's data, reloaded with the training augmentation AUGMENT (None: the data as loaded)."""
        if not augment:
            return self.dataset
        spec = self.spec
        return load_data(spec.dataset, split=spec.split, samples=spec.samples, seed=spec.seed, model=self.model,
                         augment=augment)

    def loader(self, shuffle: bool = False, batch_size: int | None = None):
        return make_loader(self.dataset, batch_size or self.spec.batch_size, shuffle=shuffle, seed=self.spec.seed)

    def collect(self, reducer, desc: str, shuffle: bool = False) -> list:
        """One streaming pass of the model's blocks over the data into REDUCER (`features.collect`),
        with progress per batch. Returns the block list."""
        loader = self.loader(shuffle=shuffle)
        return collect(self.model, loader, [reducer], self.device, self.progress(len(loader), desc))
