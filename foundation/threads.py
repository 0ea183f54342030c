"""Scoped torch CPU thread count."""

from __future__ import annotations

import contextlib

import torch

__all__ = ["torch_threads"]


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
