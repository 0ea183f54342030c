"""The one check of a torch device name given in a config ("cpu", "cuda", "cuda:N")."""

from __future__ import annotations

import torch

__all__ = ["check_device"]


def check_device(name: str, what: str = "device", available: bool = True) -> torch.device:
    """``name`` as a :class:`torch.device`, refused with a clear ``ValueError`` before anything runs.

    Args:
        name: "cpu", "cuda" or "cuda:N".  what: the setting's name, for the messages.
        available: also require that torch can use it here (a CUDA device present, ``N`` below the device
            count); False checks the name only (a config saved on a GPU machine still loads on a CPU one).
    """
    bad = f"{what} must be 'cpu', 'cuda' or 'cuda:N', got {name!r}"
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise ValueError(bad) from e
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(bad)
    if available and dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{what}={name}: torch sees no CUDA device here (is a CUDA build of torch installed?); "
                             f"use {what}=cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{what}={name}: torch sees {torch.cuda.device_count()} CUDA device(s)")
    return dev
