"""Scoped torch CPU thread count."""

from __future__ import annotations

import contextlib
import os

import torch

__all__ = ["cpu_count", "torch_threads"]


def cpu_count() -> int:
    """Cores this process may run on (its CPU affinity; ``os.cpu_count()`` where that is unknown), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block with ``n`` torch intra-op CPU threads, restoring the previous count afterwards.

    ``None`` or 0 leaves the count unchanged (torch's default or what the caller set).
    """
    if not n:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(old)
