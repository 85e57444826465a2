"""Pick the torch device: "cpu", "cuda", "cuda:N" or "auto" (CUDA when present)."""
from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def full_precision():
    """float32 work done in float32 on CUDA for the duration: TF32 off for cuDNN's convolutions and for
    matmuls (torch's `fp32_precision` settings, torch >= 2.9), the caller's settings restored after.

    cuDNN rounds float32 convolutions to TF32 (a 10-bit mantissa) by default. On an H200
    (benchmarks/gpu_check.py, 2026-12-04) that moved AlterNet's Fourier amplitudes by 8e-4 relative,
    a lesion's NLL by 8e-5 and a loss-surface point by 2e-4 between two runs: measurements compared
    across devices and against the paper must not depend on it. On the CPU nothing changes. Also a
    decorator. The settings are process-wide: a thread of the caller's that runs convolutions at the
    same time runs them in float32 too.
    """
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    saved = conv.fp32_precision, matmul.fp32_precision
    conv.fp32_precision = matmul.fp32_precision = "ieee"
    try:
        yield
    finally:
        conv.fp32_precision, matmul.fp32_precision = saved
