"""NVIDIA Warp plumbing of the geometry package, and the one object that holds its process state.

:class:`WarpContext` holds everything the geometry ops keep between calls: whether Warp has been
initialised, the LRU cache of ``wp.Mesh`` BVHs (keyed by mesh content), the CPU thread pool, the
memo of tensor content hashes, and the LRU cache of edge topologies
(:func:`foundation.geometry.diff_render.edge_topology`). One default instance serves the whole
process (:func:`warp_context`); :meth:`WarpContext.clear` empties its caches, and
:func:`set_warp_context` swaps in another instance (tests, or a user who wants other cache sizes).

The module functions (:func:`init_warp`, :func:`get_mesh`, :func:`clear_mesh_cache`,
:func:`parallel_launch`, :func:`tensor_digest`, :func:`torch_stream`) are thin wrappers that use the
default context at call time; :func:`wp_device` and :func:`num_cpu_threads` hold no state.

Warp runs every CPU kernel launch on one thread; :meth:`WarpContext.parallel_launch` splits a 1-D
launch into chunks run from the thread pool (ctypes releases the GIL during the launch), which is what
makes the CPU paths of :mod:`foundation.geometry.sdf` and :mod:`foundation.geometry.raycast` scale
with cores.
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
from typing import Any, Callable

import torch

from foundation.threads import cpu_count

log = logging.getLogger(__name__)

__all__ = [
    "WarpContext", "LRUCache", "warp_context", "set_warp_context",
    "init_warp", "wp_device", "torch_stream", "get_mesh", "clear_mesh_cache", "parallel_launch", "num_cpu_threads",
    "tensor_digest",
]


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


def wp_device(device: torch.device | str) -> str:
    """Torch device -> Warp device name: ``cpu`` -> ``"cpu"``, ``cuda`` / ``cuda:N`` -> ``"cuda:N"``."""
    device = torch.device(device)
    if device.type == "cpu":
        return "cpu"
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index}"
    raise ValueError(f"warp_utils: unsupported torch device {device}; use cpu or cuda")


def num_cpu_threads() -> int:
    """Threads used for chunked CPU launches: ``torch.get_num_threads()``, at most the cores this process may use."""
    return max(1, min(cpu_count(), torch.get_num_threads()))


def _content_digest(t: torch.Tensor) -> bytes:
    """16-byte blake2b hash of a tensor's bytes (copied to host if needed)."""
    arr = t.detach().contiguous().cpu().numpy()
    return hashlib.blake2b(arr.tobytes(), digest_size=16).digest()


class LRUCache:
    """A small thread-safe mapping that forgets its least recently used entry beyond ``maxsize``.

    ``lock`` is re-entrant: hold it across a :meth:`get` and a :meth:`put` to make a look-up and
    the build of a missing entry one atomic step.
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"LRUCache: maxsize must be >= 1, got {maxsize}")
        self.maxsize = int(maxsize)
        self.lock = threading.RLock()
        self._items: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key, default=None):
        """The value stored under ``key`` (now the most recently used), or ``default``."""
        with self.lock:
            if key not in self._items:
                return default
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key, value) -> None:
        """Store ``value`` under ``key`` as the most recently used; evict the oldest beyond ``maxsize``."""
        with self.lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)

    def clear(self) -> None:
        """Forget every entry."""
        with self.lock:
            self._items.clear()

    def __len__(self) -> int:
        with self.lock:
            return len(self._items)

    def __contains__(self, key) -> bool:
        with self.lock:
            return key in self._items


@dataclass
class _CachedMesh:
    mesh: object  # wp.Mesh
    points: torch.Tensor  # (V, 3) float32 contiguous, aliased by mesh.points
    indices: torch.Tensor  # (3F,) int32 contiguous, aliased by mesh.indices
    verts_key: bytes


class WarpContext:
    """Process state of the geometry package: Warp init flag, ``wp.Mesh`` cache, thread pool, memos.

    Args:
        mesh_cache_size: ``wp.Mesh`` BVHs kept (:meth:`get_mesh`), least recently used dropped first.
        digest_memo_size: tensors whose content hash is remembered (:meth:`tensor_digest` with
            ``memo=True``).
        topology_cache_size: edge topologies kept (``topologies``, used by
            :func:`foundation.geometry.diff_render.edge_topology`).

    Attributes:
        meshes, digests, topologies: the three :class:`LRUCache` s (``len()`` gives their fill).

    All methods are thread-safe. Clearing does not invalidate a ``wp.Mesh`` a caller still holds,
    but a mesh must not be kept across calls anyway (see :meth:`get_mesh`).
    """

    def __init__(self, *, mesh_cache_size: int = 8, digest_memo_size: int = 64, topology_cache_size: int = 8):
        self.meshes = LRUCache(mesh_cache_size)
        self.digests = LRUCache(digest_memo_size)
        self.topologies = LRUCache(topology_cache_size)
        self._init_lock = threading.Lock()
        self._initialised = False
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    # ------------------------------------------------------------------------------------------ state
    @property
    def initialised(self) -> bool:
        """Whether :meth:`init` has run for this context."""
        return self._initialised

    def clear(self) -> None:
        """Drop every cached ``wp.Mesh``, remembered digest and edge topology (the pool stays)."""
        self.meshes.clear()
        self.digests.clear()
        self.topologies.clear()

    def shutdown(self) -> None:
        """:meth:`clear`, then stop the CPU thread pool (a later parallel launch starts a new one)."""
        self.clear()
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    # ------------------------------------------------------------------------------------------ warp
    def init(self):
        """Import and initialise Warp once, quietly. Returns the ``warp`` module.

        Warp itself stays initialised for the life of the process; a second context's first
        ``init`` only re-applies the quiet logging settings.
        """
        import warp as wp

        if not self._initialised:
            with self._init_lock:
                if not self._initialised:
                    wp.config.quiet = True  # pre-1.x name; 1.19 reads log_level
                    wp.config.log_level = wp.LOG_WARNING
                    if torch.cuda.is_available():
                        wp.init()
                    else:
                        with _silence_stderr():  # native "could not load the CUDA driver" message
                            wp.init()
                    self._initialised = True
                    log.debug("warp %s initialised", wp.__version__)
        return wp

    def torch_stream(self, device: torch.device | str):
        """Context manager: run Warp work on the current torch CUDA stream (no-op on CPU).

        Keeps Warp kernels ordered with the torch ops that produce their inputs and read their outputs.
        """
        wp = self.init()
        device = torch.device(device)
        if device.type == "cuda":
            return wp.ScopedStream(wp.stream_from_torch(torch.cuda.current_stream(device)))
        return contextlib.nullcontext()

    def _thread_pool(self, n: int) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None or self._pool._max_workers < n:  # noqa: SLF001
                # a smaller old pool is not shut down: another thread may be about to submit to it
                self._pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="warp-cpu")
            return self._pool

    def parallel_launch(self, kernel, dim: int, inputs_fn: Callable[[int], list], *, device: str,
                        min_chunk: int = 4096) -> None:
        """Launch ``kernel`` over ``range(dim)``; on CPU split into contiguous chunks run in threads.

        Args:
            kernel: a ``@wp.kernel`` with a 1-D launch grid whose first argument is an ``int`` offset
                (thread ``i`` of a chunk starting at ``offset`` handles item ``offset + i``).
            dim: total number of threads.
            inputs_fn: ``inputs_fn(offset) -> list`` of the kernel's remaining arguments.
            device: Warp device name (:func:`wp_device`); CUDA launches are never split.
            min_chunk: do not split into chunks smaller than this.
        """
        wp = self.init()
        if dim <= 0:
            return
        n = num_cpu_threads() if device == "cpu" else 1
        n = max(1, min(n, dim // min_chunk))
        chunks = max(1, min(4 * n, dim // min_chunk))  # a few chunks per thread balance uneven work
        if n == 1:
            wp.launch(kernel, dim=dim, inputs=[0, *inputs_fn(0)], device=device)
            return
        pool = self._thread_pool(n)
        # Make sure the module is compiled/loaded once, before threads race to do so.
        wp.load_module(kernel.module, device=device)
        bounds = [dim * i // chunks for i in range(chunks + 1)]

        def run(i: int) -> None:
            lo, hi = bounds[i], bounds[i + 1]
            wp.launch(kernel, dim=hi - lo, inputs=[lo, *inputs_fn(lo)], device=device)

        for f in [pool.submit(run, i) for i in range(chunks)]:
            f.result()

    # ------------------------------------------------------------------------------------------ caches
    def tensor_digest(self, t: torch.Tensor, *, memo: bool = False) -> bytes:
        """16-byte content hash of a tensor of any shape (copies to host if needed).

        ``memo=True`` remembers the hash per tensor object and in-place version counter, for tensors
        passed again and again unchanged (mesh faces); a new tensor or an in-place edit rehashes.
        """
        if not memo:
            return _content_digest(t)
        key = id(t)
        stamp = (t._version, t.data_ptr(), tuple(t.shape), t.dtype, t.device)
        hit = self.digests.get(key)
        if hit is not None and hit[0]() is t and hit[1] == stamp:
            return hit[2]
        digest = _content_digest(t)
        self.digests.put(key, (weakref.ref(t), stamp, digest))
        return digest

    def get_mesh(self, verts: torch.Tensor, faces: torch.Tensor, *, winding: bool = False):
        """A ``wp.Mesh`` for ``(verts, faces)``, cached by content in ``meshes``.

        Keys are content hashes, so passing the same mesh again (even as a new tensor) reuses the BVH.
        When only the vertices changed (same faces, same vertex count, e.g. a body in an optimisation
        loop) the cached mesh is updated in place and refitted instead of rebuilt.

        Args:
            verts: (V, 3) float vertex positions, any frame (queries use the same frame).
            faces: (F, 3) integer vertex indices, on the device of ``verts``.
            winding: build the data Warp needs for ``mesh_query_point_sign_winding_number``.

        Returns:
            ``wp.Mesh`` on the Warp device matching ``verts.device``. Do not keep it across calls:
            a later call with different vertices and the same faces may refit it in place.
        """
        wp = self.init()
        if verts.ndim != 2 or verts.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
            raise ValueError(
                f"get_mesh: need verts (V, 3) and faces (F, 3), got {tuple(verts.shape)}, {tuple(faces.shape)}"
            )
        device = wp_device(verts.device)
        if faces.device != verts.device:
            raise ValueError(f"get_mesh: verts on {verts.device} but faces on {faces.device}")
        points = verts.detach().to(torch.float32).contiguous()
        vkey, fkey = self.tensor_digest(points), self.tensor_digest(faces, memo=True)
        key = (device, int(points.shape[0]), fkey, bool(winding))
        with self.meshes.lock, self.torch_stream(verts.device):
            entry = self.meshes.get(key)
            if entry is not None:
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
            self.meshes.put(key, _CachedMesh(mesh, points, indices, vkey))
            return mesh


# ---------------------------------------------------------------------------------------------- default
_DEFAULT: WarpContext | None = None
_DEFAULT_LOCK = threading.Lock()


def warp_context() -> WarpContext:
    """The process-wide default :class:`WarpContext` (created on first use)."""
    global _DEFAULT
    ctx = _DEFAULT
    if ctx is None:
        with _DEFAULT_LOCK:
            if _DEFAULT is None:
                _DEFAULT = WarpContext()
            ctx = _DEFAULT
    return ctx


def set_warp_context(ctx: WarpContext | None) -> WarpContext | None:
    """Make ``ctx`` the default context (``None``: a fresh one on next use); returns the previous one.

    The previous context is left as it is (call its :meth:`WarpContext.shutdown` to free it).
    """
    global _DEFAULT
    if ctx is not None and not isinstance(ctx, WarpContext):
        raise TypeError(f"set_warp_context: need a WarpContext or None, got {type(ctx)}")
    with _DEFAULT_LOCK:
        prev, _DEFAULT = _DEFAULT, ctx
    return prev


# ---------------------------------------------------------------------------------------------- wrappers
def init_warp():
    """Import and initialise Warp once, quietly (default context). Returns the ``warp`` module."""
    return warp_context().init()


def torch_stream(device: torch.device | str):
    """:meth:`WarpContext.torch_stream` of the default context (Warp on torch's CUDA stream)."""
    return warp_context().torch_stream(device)


def parallel_launch(kernel, dim: int, inputs_fn: Callable[[int], list], *, device: str, min_chunk: int = 4096) -> None:
    """:meth:`WarpContext.parallel_launch` of the default context (chunked, threaded CPU launch)."""
    warp_context().parallel_launch(kernel, dim, inputs_fn, device=device, min_chunk=min_chunk)


def tensor_digest(t: torch.Tensor, *, memo: bool = False) -> bytes:
    """16-byte content hash of a tensor; ``memo=True`` remembers it per tensor object (default context)."""
    return warp_context().tensor_digest(t, memo=memo)


def get_mesh(verts: torch.Tensor, faces: torch.Tensor, *, winding: bool = False):
    """:meth:`WarpContext.get_mesh` of the default context: a cached ``wp.Mesh`` of (V, 3) verts, (F, 3) faces."""
    return warp_context().get_mesh(verts, faces, winding=winding)


def clear_mesh_cache() -> None:
    """Drop every ``wp.Mesh`` cached by the default context (its other caches stay)."""
    warp_context().meshes.clear()
