"""A request's memory, estimated before anything is built or queued, and refused over the budget.

The model is sized on PyTorch's `meta` device (`vitlens.models.sizing`: parameters, and for one image
the floats every leaf module outputs and the largest of them); the analysis declares what it keeps
(`vitlens.analyses.Memory`); the estimate is the documented formula there. The budget is
`VITLENS_MAX_MEMORY` (e.g. 16G) or, when unset, the device's free memory (CUDA: `mem_get_info`; CPU:
MemAvailable), plus a constant for the runtime's own first-pass memory. `benchmarks/bench_sizing.py`
states the estimate's error against measured peaks (README "Speed").
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from .declarations import Analysis, get_analysis
from .errors import VitlensError
from .models.registry import check_model_args
from .models.sizing import Sizing, human, size_model
from .request import JobSpec
from .store.disk import parse_size

FLOAT = 4  # bytes: the analyses compute in float32
# What any first pass costs besides the formula's terms: the allocator's arenas and the kernels'
# scratch (measured on CPU at 100-180 MiB for small models, benchmarks/bench_sizing.py)
RUNTIME = 128 * 2 ** 20
ALL_SAMPLES = 50000  # what "all" samples is taken to be before the data set is read (CIFAR's train split)


@dataclass(frozen=True)
class Estimate:
    bytes: int
    parts: dict        # weights, graph, working, data (bytes each)
    sizing: Sizing
    batch: int

    def describe(self) -> str:
        parts = ", ".join(f"{k} {human(v)}" for k, v in self.parts.items() if v)
        return f"about {human(self.bytes)} ({parts})"


def estimate(spec: JobSpec, analysis: Analysis | None = None) -> Estimate:
    """The peak memory SPEC's analysis (ANALYSIS, when the caller has looked it up) should need
    (see `vitlens.declarations.Memory`)."""
    analysis = analysis or get_analysis(spec.analysis)
    params = analysis.parse(spec.params or {})
    sizing = size_model(spec.model, check_model_args(spec.model_args or {}))
    memory = analysis.memory
    batch = int(memory.batch(params, spec.batch_size)) if memory.batch else spec.batch_size
    samples = spec.samples or ALL_SAMPLES
    image = math.prod(sizing.input_size)
    weights = memory.weights + (memory.more(params) if memory.more else 0.0)
    parts = {"weights": weights * sizing.params, "graph": memory.graph * sizing.activations * batch,
             "working": memory.working * sizing.largest * batch, "data": memory.data * samples * image}
    parts = {k: int(FLOAT * v) for k, v in parts.items()}
    parts["runtime"] = RUNTIME
    return Estimate(sum(parts.values()), parts, sizing, batch)


def available(device: str = "auto") -> tuple[int, str]:
    """(bytes, where the number comes from) of the memory budget for DEVICE."""
    text = os.environ.get("VITLENS_MAX_MEMORY", "").strip()
    if text:
        try:
            return parse_size(text), "VITLENS_MAX_MEMORY"
        except VitlensError:
            raise VitlensError(f"VITLENS_MAX_MEMORY must be a size like 16G, got {text!r}") from None
    if device != "cpu" and torch.cuda.is_available():
        index = int(device.split(":")[1]) if device.startswith("cuda:") else torch.cuda.current_device()
        free, _ = torch.cuda.mem_get_info(index)
        return free, f"free memory of cuda:{index} (or set VITLENS_MAX_MEMORY)"
    try:
        with open("/proc/meminfo") as handle:
            info = dict(line.split(":", 1) for line in handle)
        return int(info["MemAvailable"].split()[0]) * 1024, "the host's available memory (or set VITLENS_MAX_MEMORY)"
    except (OSError, KeyError, ValueError):
        return 2 ** 62, "unknown"


def check(spec: JobSpec, analysis: Analysis | None = None) -> Estimate:
    """SPEC's estimate, or one line when it is over the budget (nothing is built or allocated)."""
    need = estimate(spec, analysis)
    budget, source = available(spec.device)
    if need.bytes > budget:
        raise VitlensError(f"{spec.analysis} on {spec.model} (batch {need.batch}, {spec.samples or 'all'} samples) "
                           f"needs {need.describe()}, over {human(budget)}, {source}; ask for a smaller batch, "
                           "fewer samples or a smaller model")
    return need
