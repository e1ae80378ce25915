"""Process settings for training on a CPU: torch's thread count and glibc's allocator.

A training step allocates a few buffers of tens of MB (the states and gate factors of every
step). By default glibc serves those with fresh mmap()s and returns them when freed, so every step
page-faults them in again; that cost up to 1.7x on a 2-core CPU (torch.nn.LSTM at H=128, B=64,
T=200: 64 -> 38 ms per step; see docs/speed.md). Raising the mmap and trim thresholds keeps
freed buffers in the heap for the next step. It changes no number, only where memory comes from.
`release` hands the kept memory back when a run ends (a sweep worker then does not look like it
leaks: joblib's workers restart when their memory grows by 300 MB between jobs).
"""

from __future__ import annotations

import ctypes
import ctypes.util

import torch

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h
KEEP_BYTES = 1 << 30  # buffers up to 1 GiB come from (and go back to) the heap


def _libc_function(name: str):
    path = ctypes.util.find_library("c")
    return getattr(ctypes.CDLL(path), name, None) if path else None


def configure(threads: int = 1) -> bool:
    """Set torch's intra-op threads and keep large freed buffers for reuse (glibc only).
    Returns whether the allocator could be tuned (False on non-glibc platforms)."""
    torch.set_num_threads(threads)
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, KEEP_BYTES)
    )


def release() -> None:
    """Return the heap's free memory to the operating system (glibc only; else nothing)."""
    malloc_trim = _libc_function("malloc_trim")
    if malloc_trim is not None:
        malloc_trim(0)
