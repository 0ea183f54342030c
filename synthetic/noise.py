"""Deterministic 3-D noise for wrinkles, skirt folds and fabric / hair textures: fractal sums of Warp's
Perlin noise (``wp.noise``), evaluated by a Warp kernel (CPU threads or CUDA)."""

from __future__ import annotations

import torch
import warp as wp

from foundation.geometry.warp_utils import init_warp, parallel_launch, wp_device

__all__ = ["fbm", "fbm_multi", "perlin"]


@wp.kernel
def _fbm_multi_kernel(
    offset: int,
    points: wp.array(dtype=wp.vec3),
    freqs: wp.array(dtype=wp.float32),
    seeds: wp.array(dtype=wp.int32),
    octaves: int,
    gain: float,
    where: wp.array2d(dtype=wp.float32),
    out: wp.array2d(dtype=wp.float32),
):
    tid = wp.tid() + offset
    p = points[tid]
    for g in range(freqs.shape[0]):
        if where[tid, g] <= 0.0:
            out[tid, g] = 0.0
            continue
        amp = float(1.0)
        norm = float(0.0)
        total = float(0.0)
        f = freqs[g]
        for o in range(octaves):
            state = wp.rand_init(seeds[g] + 101 * o)
            total += amp * wp.noise(state, p * f + wp.vec3(17.0 * float(o)))
            norm += amp
            amp *= gain
            f *= 2.0
        out[tid, g] = total / norm


def fbm_multi(p: torch.Tensor, freqs: list[float], seeds: list[int], where: torch.Tensor, octaves: int = 2,
              gain: float = 0.5) -> torch.Tensor:
    """:func:`fbm` of G fields at once, each computed only where it is wanted.

    Args:
        p: (N, 3) points, metres (any frame; the noise is a fixed function of the coordinates).
        freqs: G base frequencies, 1/metres; seeds: G integer seeds (one field each).
        where: (N, G) float; field g is evaluated at point i only where ``where[i, g] > 0``.
        octaves, gain: as in :func:`fbm`.

    Returns:
        (N, G) float32 values, roughly in [-1, 1], 0 where ``where <= 0``; same device as ``p``.
    """
    init_warp()
    pts = p.detach().float().contiguous()
    G = len(freqs)
    out = torch.empty(pts.shape[0], G, dtype=torch.float32, device=pts.device)
    if pts.shape[0] and G:
        f = torch.tensor(freqs, dtype=torch.float32, device=pts.device)
        s = torch.tensor([int(x) & 0x7FFFFFFF for x in seeds], dtype=torch.int32, device=pts.device)
        args = [wp.from_torch(pts, dtype=wp.vec3), wp.from_torch(f), wp.from_torch(s), int(octaves), float(gain),
                wp.from_torch(where.detach().float().contiguous()), wp.from_torch(out)]
        parallel_launch(_fbm_multi_kernel, pts.shape[0], lambda _o: args, device=wp_device(pts.device))
    return out


def fbm(p: torch.Tensor, freq: float, seed: int = 0, octaves: int = 2, gain: float = 0.5) -> torch.Tensor:
    """Fractal sum of Perlin-noise octaves.

    Args:
        p: (N, 3) points, metres.
        freq: base frequency, 1/metres (one noise feature per ``1/freq`` metres).
        seed: integer seed (each octave uses its own field).
        octaves: number of octaves, each at twice the frequency and ``gain`` times the amplitude.

    Returns:
        (N,) float32 values, roughly in [-1, 1], smooth in ``p``; same device as ``p``.
    """
    ones = torch.ones(p.shape[0], 1, device=p.device)
    return fbm_multi(p, [freq], [seed], ones, octaves, gain)[:, 0]


def perlin(p: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Single-octave noise with unit feature size: (N, 3) points (metres, any frame) -> (N,) float32 in
    about [-1, 1]."""
    return fbm(p, 1.0, seed, octaves=1)
