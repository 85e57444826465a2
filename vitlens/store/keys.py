"""The keys of the store, in one place.

* `request_id(spec)`: what the user asked for (the request, the size and time of every file it
  reads, the vitlens version). Identical requests share it: they join one running job and find its
  Result through a cache alias without building the model.
* `cache_key(...)`: what decides a Result (the model's weights fingerprint, the data, the analysis,
  its parsed options, the vitlens version), so new weights, other data, another option or a new
  release never serve a stale Result. `Recipe.key` composes it for a request's final Result and its
  partial results (`Context.partial_store`).

A `Recipe` is made once per run: it looks the analysis up once and stats the files once.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..declarations import Analysis, get_analysis
from ..errors import VitlensError
from ..models.checkpoints import SUFFIXES
from ..request import JobSpec
from ..version import __version__

VERSION = __version__


def model_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of the model's class, module structure and every state_dict entry's bytes."""
    h = hashlib.sha256()
    cls = type(model)
    h.update(f"{cls.__module__}.{cls.__qualname__}\n".encode())
    # repr lists submodules and their settings (activation, dropout p, ...) that weights miss.
    h.update(repr(model).encode())
    for name, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):  # e.g. _extra_state objects
            h.update(json.dumps([name, repr(value)]).encode() + b"\0")
            continue
        t = value.detach().to("cpu").contiguous()
        h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode() + b"\0")
        if t.numel():
            # Raw bytes via a uint8 view: no copy, and works for dtypes numpy lacks (bfloat16).
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return value.item()  # numpy / torch scalars
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise VitlensError(f"cache key parts must be JSON data, got {type(value).__name__}")


def cache_key(fingerprint: str, data_spec: dict | str, analysis: str, params: dict) -> str:
    """sha256 of a canonical JSON of everything that decides a Result, vitlens version included."""
    if not isinstance(params, dict):
        raise VitlensError(f"analysis params must be a dict, got {type(params).__name__}")
    if not isinstance(data_spec, (dict, str)):
        raise VitlensError(f"data spec must be a dict or a string, got {type(data_spec).__name__}")
    parts = {"fingerprint": fingerprint, "data": data_spec, "analysis": analysis,
             "params": params, "vitlens": VERSION}
    try:
        text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=json_default)
    except TypeError as error:  # e.g. dict keys of mixed types cannot be sorted
        raise VitlensError(f"cache key parts must be JSON data: {error}") from None
    return hashlib.sha256(text.encode()).hexdigest()




def file_stats(path) -> list | None:
    """[name, size, mtime_ns] of the weight file PATH, or of every weight file in the folder PATH."""
    try:
        path = Path(path).expanduser()
        files = sorted(f for f in path.iterdir() if f.name.endswith(SUFFIXES)) if path.is_dir() else [path]
        return [[f.name, (st := os.stat(f)).st_size, st.st_mtime_ns] for f in files]
    except OSError:
        return None


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


@dataclass(frozen=True)
class Recipe:
    """What a request reads besides its own text, looked at once: the size and time of every weight
    file (its checkpoint, and the options declared with path=True: --checkpoints folders, a
    trajectory, a path endpoint) and a digest of the files behind its data. Gives the request id and
    the cache keys of its Result and partial results."""

    spec: JobSpec
    checkpoint: list | None
    files: dict
    data: str | None

    @classmethod
    def of(cls, spec: JobSpec, analysis: Analysis | None = None) -> "Recipe":
        if analysis is None and spec.analysis:
            analysis = get_analysis(spec.analysis)
        names = [o.name for o in analysis.options if o.path] if analysis is not None else []
        files = {name: file_stats(spec.params[name]) for name in names if spec.params.get(name)}
        return cls(spec, file_stats(spec.checkpoint) if spec.checkpoint else None, files, data_files(spec.dataset))

    @property
    def request_id(self) -> str:
        """A hash of what the user asked for; the cache key itself also covers the weights."""
        payload = dict(self.spec.to_dict(), vitlens=VERSION)  # shipped weights change only with the version
        if self.spec.checkpoint:
            payload["checkpoint_stat"] = self.checkpoint
        payload["files"] = self.files
        payload["data_files"] = self.data
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    def key(self, fingerprint: str, name: str, params: dict) -> str:
        """The cache key of what NAME computes under PARAMS on the request's data with the model of
        FINGERPRINT: the final Result's (NAME = the analysis) and its partial results'."""
        spec = self.spec
        data_spec = dict(dataset=spec.dataset, split=spec.split, samples=spec.samples, seed=spec.seed,
                         batch_size=spec.batch_size, files=self.data)
        return cache_key(fingerprint, data_spec, name,
                         dict(params, model=spec.model, model_args=spec.model_args, files=self.files))


def request_id(spec: JobSpec) -> str:
    """SPEC's request id (`Recipe.request_id`)."""
    return Recipe.of(spec).request_id
