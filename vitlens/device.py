"""Pick the torch device: "cpu", "cuda", "cuda:N" or "auto" (CUDA when present)."""
from __future__ import annotations

import os
import time
from typing import Callable

import torch

from .errors import VitlensError


def resolve_device(name: str | None = "auto") -> torch.device:
    """"auto" follows $VITLENS_DEVICE when set (a server's operator picks the GPU), else CUDA if present."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        name = (os.environ.get("VITLENS_DEVICE") or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise VitlensError("--device cuda asked for, but no CUDA GPU is visible; use --device cpu")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise VitlensError(f"unknown device '{name}'; use cpu, cuda, cuda:N or auto")


def synchronize(device: torch.device | str) -> None:
    """Wait for DEVICE's queued work (CUDA runs asynchronously); on the CPU there is nothing to wait for."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn: Callable[[], object], device: torch.device | str) -> float:
    """Wall seconds of one call FN(), DEVICE synchronised before and after (the timing probes that pick
    `--together` and `--points-per-pass`)."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start
