"""Small helpers around NVIDIA Warp: lazy quiet init, device mapping, a ``wp.Mesh`` cache, CPU threading.

Warp runs every CPU kernel launch on one thread; :func:`parallel_launch` splits a 1-D launch into
chunks run from a thread pool (ctypes releases the GIL during the launch), which is what makes the
CPU paths of :mod:`foundation.geometry.sdf` and :mod:`foundation.geometry.raycast` scale with cores.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import weakref
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

__all__ = [
    "init_warp", "wp_device", "torch_stream", "get_mesh", "clear_mesh_cache", "parallel_launch", "num_cpu_threads",
    "tensor_digest",
]

_INIT_LOCK = threading.Lock()
_INITIALISED = False
_MESH_CACHE_SIZE = 8
_MESH_CACHE: "OrderedDict[tuple, _CachedMesh]" = OrderedDict()
_MESH_LOCK = threading.Lock()
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
_DIGEST_MEMO: "OrderedDict[int, tuple]" = OrderedDict()
_MEMO_LOCK = threading.Lock()


@contextlib.contextmanager
def _silence_stderr():
    """Temporarily point file descriptor 2 at /dev/null (silences native fprintf(stderr))."""
    try:
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:  # pragma: no cover
        yield
        return
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def init_warp():
    """Import and initialise Warp once, quietly. Returns the ``warp`` module."""
    global _INITIALISED
    import warp as wp

    if not _INITIALISED:
        with _INIT_LOCK:
            if not _INITIALISED:
                wp.config.quiet = True  # pre-1.x name; 1.19 reads log_level
                wp.config.log_level = wp.LOG_WARNING
                if torch.cuda.is_available():
                    wp.init()
                else:
                    with _silence_stderr():  # native "could not load the CUDA driver" message
                        wp.init()
                _INITIALISED = True
                log.debug("warp %s initialised", wp.__version__)
    return wp


def wp_device(device: torch.device | str) -> str:
    """Torch device -> Warp device name: ``cpu`` -> ``"cpu"``, ``cuda`` / ``cuda:N`` -> ``"cuda:N"``."""
    device = torch.device(device)
    if device.type == "cpu":
        return "cpu"
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index}"
    raise ValueError(f"warp_utils: unsupported torch device {device}; use cpu or cuda")


def torch_stream(device: torch.device | str):
    """Context manager: run Warp work on the current torch CUDA stream (no-op on CPU).

    Keeps Warp kernels ordered with the torch ops that produce their inputs and read their outputs.
    """
    wp = init_warp()
    device = torch.device(device)
    if device.type == "cuda":
        return wp.ScopedStream(wp.stream_from_torch(torch.cuda.current_stream(device)))
    return contextlib.nullcontext()


def num_cpu_threads() -> int:
    """Threads used for chunked CPU launches (``torch.get_num_threads()``, at least 1)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        n = os.cpu_count() or 1
    return max(1, min(n, torch.get_num_threads()))


def parallel_launch(kernel, dim: int, inputs_fn, *, device: str, min_chunk: int = 4096) -> None:
    """Launch ``kernel`` over ``range(dim)``; on CPU split into contiguous chunks run in threads.

    Args:
        kernel: a ``@wp.kernel`` with a 1-D launch grid whose first argument is an ``int`` offset.
        dim: total number of threads.
        inputs_fn: ``inputs_fn(offset) -> list`` of the kernel's remaining arguments.
        device: Warp device name.
        min_chunk: do not split into chunks smaller than this.
    """
    wp = init_warp()
    if dim <= 0:
        return
    n = num_cpu_threads() if device == "cpu" else 1
    n = max(1, min(n, dim // min_chunk))
    chunks = max(1, min(4 * n, dim // min_chunk))  # a few chunks per thread balance uneven work
    if n == 1:
        wp.launch(kernel, dim=dim, inputs=[0, *inputs_fn(0)], device=device)
        return
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers < n:  # noqa: SLF001
            _POOL = ThreadPoolExecutor(max_workers=n, thread_name_prefix="warp-cpu")
        pool = _POOL
    # Make sure the module is compiled/loaded once, before threads race to do so.
    wp.load_module(kernel.module, device=device)
    bounds = [dim * i // chunks for i in range(chunks + 1)]

    def run(i: int) -> None:
        lo, hi = bounds[i], bounds[i + 1]
        wp.launch(kernel, dim=hi - lo, inputs=[lo, *inputs_fn(lo)], device=device)

    for f in [pool.submit(run, i) for i in range(chunks)]:
        f.result()


# ---------------------------------------------------------------------------------------------- meshes
@dataclass
class _CachedMesh:
    mesh: object  # wp.Mesh
    points: torch.Tensor  # (V, 3) float32 contiguous, aliased by mesh.points
    indices: torch.Tensor  # (3F,) int32 contiguous, aliased by mesh.indices
    verts_key: bytes


def tensor_digest(t: torch.Tensor, *, memo: bool = False) -> bytes:
    """16-byte content hash of a tensor (copies to host if needed).

    ``memo=True`` remembers the hash per tensor object and in-place version counter, for tensors that
    are passed again and again unchanged (mesh faces); a new tensor or an in-place edit rehashes.
    """
    if memo:
        key = id(t)
        stamp = (t._version, t.data_ptr(), tuple(t.shape), t.dtype, t.device)
        with _MEMO_LOCK:
            hit = _DIGEST_MEMO.get(key)
            if hit is not None and hit[0]() is t and hit[1] == stamp:
                return hit[2]
        digest = tensor_digest(t)
        with _MEMO_LOCK:
            _DIGEST_MEMO[key] = (weakref.ref(t), stamp, digest)
            while len(_DIGEST_MEMO) > 64:
                _DIGEST_MEMO.popitem(last=False)
        return digest
    arr = t.detach().contiguous().cpu().numpy()
    return hashlib.blake2b(arr.tobytes(), digest_size=16).digest()


def get_mesh(verts: torch.Tensor, faces: torch.Tensor, *, winding: bool = False):
    """A ``wp.Mesh`` for ``(verts, faces)``, cached by content.

    Keys are content hashes, so passing the same mesh again (even as a new tensor) reuses the BVH.
    When only the vertices changed (same faces, same vertex count, e.g. a body in an optimisation
    loop) the cached mesh is updated in place and refitted instead of rebuilt.

    Args:
        verts: (V, 3) float vertex positions, any frame (queries use the same frame).
        faces: (F, 3) integer vertex indices.
        winding: build the data Warp needs for ``mesh_query_point_sign_winding_number``.

    Returns:
        ``wp.Mesh`` on the Warp device matching ``verts.device``. Do not keep it across calls:
        a later call with different vertices and the same faces may refit it in place.
    """
    wp = init_warp()
    if verts.ndim != 2 or verts.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(
            f"get_mesh: need verts (V, 3) and faces (F, 3), got {tuple(verts.shape)}, {tuple(faces.shape)}"
        )
    device = wp_device(verts.device)
    if faces.device != verts.device:
        raise ValueError(f"get_mesh: verts on {verts.device} but faces on {faces.device}")
    points = verts.detach().to(torch.float32).contiguous()
    vkey, fkey = tensor_digest(points), tensor_digest(faces, memo=True)
    key = (device, int(points.shape[0]), fkey, bool(winding))
    with _MESH_LOCK, torch_stream(verts.device):
        entry = _MESH_CACHE.get(key)
        if entry is not None:
            _MESH_CACHE.move_to_end(key)
            if entry.verts_key != vkey:
                entry.points.copy_(points)
                entry.mesh.refit()
                entry.verts_key = vkey
            return entry.mesh
        points = points.clone()  # owned copy: refits write into it
        indices = faces.detach().to(torch.int32).reshape(-1).contiguous()
        mesh = wp.Mesh(
            points=wp.from_torch(points, dtype=wp.vec3),
            indices=wp.from_torch(indices, dtype=wp.int32),
            support_winding_number=bool(winding),
        )
        _MESH_CACHE[key] = _CachedMesh(mesh, points, indices, vkey)
        while len(_MESH_CACHE) > _MESH_CACHE_SIZE:
            _MESH_CACHE.popitem(last=False)
        return mesh


def clear_mesh_cache() -> None:
    """Drop every cached ``wp.Mesh``."""
    with _MESH_LOCK:
        _MESH_CACHE.clear()
