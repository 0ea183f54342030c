"""The explicit geometry state (WarpContext): caches fill, clear, rebuild; the default can be swapped."""

import pytest
import torch
import trimesh

from foundation.camera import Camera
from foundation.geometry import warp_utils
from foundation.geometry.diff_render import edge_topology
from foundation.geometry.raycast import raycast
from foundation.geometry.sdf import signed_distance
from foundation.geometry.warp_utils import WarpContext, clear_mesh_cache, get_mesh, set_warp_context, warp_context

CAM = Camera.look_at((0.3, 0.2, 3.0), (0, 0, 0), width=40, height=32, fov_deg=40.0)


def _sphere(sub=2):
    m = trimesh.creation.icosphere(subdivisions=sub, radius=0.5)
    return torch.tensor(m.vertices, dtype=torch.float32), torch.tensor(m.faces, dtype=torch.long)


@pytest.fixture
def ctx():
    """A fresh default context for the test; the previous default comes back afterwards."""
    fresh = WarpContext()
    prev = set_warp_context(fresh)
    yield fresh
    set_warp_context(prev)
    fresh.shutdown()


def test_default_context_is_one_object():
    assert warp_context() is warp_context()
    assert isinstance(warp_context(), WarpContext)


def test_clear_drops_meshes_and_rebuilds(ctx):
    verts, faces = _sphere()
    a = raycast(verts, faces, CAM, method="ray")  # BVH rays: builds and caches a wp.Mesh
    assert ctx.initialised and len(ctx.meshes) == 1 and len(ctx.digests) >= 1
    mesh = get_mesh(verts, faces)
    assert len(ctx.meshes) == 1  # same content: the cached BVH, not a second one
    ctx.clear()
    assert len(ctx.meshes) == 0 and len(ctx.digests) == 0 and len(ctx.topologies) == 0
    assert get_mesh(verts, faces) is not mesh  # rebuilt after clearing
    clear_mesh_cache()  # the module wrapper clears the default context's meshes
    assert len(ctx.meshes) == 0
    b = raycast(verts, faces, CAM, method="ray")
    assert len(ctx.meshes) == 1
    for k in ("mask", "depth", "face_idx", "bary", "points"):
        assert torch.equal(getattr(a, k), getattr(b, k)), k


def test_mesh_cache_is_lru_bounded():
    small = WarpContext(mesh_cache_size=2)
    verts, faces = _sphere(sub=1)
    meshes = [small.get_mesh(verts, faces[: 10 * (i + 1)]) for i in range(3)]
    assert len(small.meshes) == 2
    assert small.get_mesh(verts, faces[:30]) is meshes[2]  # most recent kept
    assert small.get_mesh(verts, faces[:10]) is not meshes[0]  # oldest evicted, rebuilt
    small.shutdown()


def test_replaced_default_context_is_used_and_separate(ctx):
    verts, faces = _sphere()
    other = WarpContext()
    sd = signed_distance(torch.zeros(4, 3), verts, faces)
    assert len(ctx.meshes) == 1 and len(other.meshes) == 0
    prev = set_warp_context(other)
    try:
        assert prev is ctx and warp_context() is other
        sd2 = signed_distance(torch.zeros(4, 3), verts, faces)
        assert len(other.meshes) == 1 and len(ctx.meshes) == 1
        assert torch.equal(sd.sdf, sd2.sdf)
    finally:
        set_warp_context(ctx)
        other.shutdown()
    with pytest.raises(TypeError):
        set_warp_context("not a context")


def test_topology_cache_and_digest_memo(ctx):
    _, faces = _sphere()
    e1, ef1 = edge_topology(faces)
    assert len(ctx.topologies) == 1 and edge_topology(faces)[0] is e1  # cached
    ctx.clear()
    e2, ef2 = edge_topology(faces)
    assert e2 is not e1 and torch.equal(e1, e2) and torch.equal(ef1, ef2)
    t = torch.arange(12).view(4, 3)
    d = warp_utils.tensor_digest(t, memo=True)
    assert warp_utils.tensor_digest(t.clone()) == d
    t[0, 0] = 5  # in-place edit bumps the version counter: rehashed
    assert warp_utils.tensor_digest(t, memo=True) != d


def test_shutdown_then_threaded_launch_still_works(ctx):
    verts, faces = _sphere()
    a = raycast(verts, faces, CAM, method="raster")
    ctx.shutdown()
    b = raycast(verts, faces, CAM, method="raster")
    assert torch.equal(a.face_idx, b.face_idx) and torch.equal(a.depth, b.depth)
