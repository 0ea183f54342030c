"""Fixtures for the tracking tests: a rendered human (the Anny body model) to detect.

The render is orthographic, front view, Lambert shaded, on a grey background, made with
trimesh ray casting (embree). Anny's frame: Z up, the body faces -Y, metres, +X is the
person's LEFT. The camera looks along +Y from the front, so the person's left appears on
the image's right (as in any photo of a person facing the camera).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

H, W = 320, 256
BACKGROUND = 110  # grey level
SKIN = np.array([0.92, 0.76, 0.64])


@dataclass(frozen=True)
class Render:
    """A rendered person.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        silhouette: (H, W) bool, pixels covered by the body.
        left_wrist_px, right_wrist_px: (2,) pixel (x, y) of the person's left/right wrist bone.
    """

    image: np.ndarray
    silhouette: np.ndarray
    left_wrist_px: np.ndarray
    right_wrist_px: np.ndarray


def _render_anny(pose: dict | None, height: int = H, width: int = W) -> Render:
    torch = pytest.importorskip("torch")
    anny = pytest.importorskip("anny")
    trimesh = pytest.importorskip("trimesh")
    roma = pytest.importorskip("roma")

    model = anny.Anny().to(torch.float32)
    params = {}
    for bone, rotvec in (pose or {}).items():
        m = torch.eye(4)
        m[:3, :3] = roma.rotvec_to_rotmat(torch.tensor(rotvec, dtype=torch.float32))
        params[bone] = m[None]
    with torch.no_grad():
        out = model(pose_parameters=params) if params else model()
    verts = out["vertices"][0].double().numpy()  # (V, 3) metres, Z up
    faces = model.get_triangular_faces().numpy()
    labels = list(model.bone_labels)
    heads = out["bone_poses"][0, :, :3, 3].double().numpy()  # (B, 3) bone head positions

    # orthographic front view: pixel u <- X, v <- -Z, fit with a margin
    lo, hi = verts.min(0), verts.max(0)
    scale = min(0.8 * width / (hi[0] - lo[0]), 0.85 * height / (hi[2] - lo[2]))  # px per metre
    cx, cz = 0.5 * (lo[0] + hi[0]), 0.5 * (lo[2] + hi[2])

    def to_px(p):
        return np.stack([(p[..., 0] - cx) * scale + width / 2, (cz - p[..., 2]) * scale + height / 2], -1)

    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    origins = np.stack([(u - width / 2) / scale + cx, np.full_like(u, lo[1] - 1.0), cz - (v - height / 2) / scale], -1)
    origins = origins.reshape(-1, 3)
    dirs = np.tile([0.0, 1.0, 0.0], (len(origins), 1))
    mesh = trimesh.Trimesh(verts, faces, process=False)
    _, ray_idx, tri_idx = mesh.ray.intersects_location(origins, dirs, multiple_hits=False)

    light = np.array([0.35, -1.0, 0.45])
    light /= np.linalg.norm(light)
    n = mesh.face_normals[tri_idx]
    shade = 0.3 + 0.7 * np.abs(n @ light)  # abs: robust to face winding
    img = np.full((height * width, 3), BACKGROUND, np.float64)
    img[ray_idx] = 255.0 * shade[:, None] * SKIN[None]
    sil = np.zeros(height * width, bool)
    sil[ray_idx] = True
    return Render(
        image=np.clip(img, 0, 255).astype(np.uint8).reshape(height, width, 3),
        silhouette=sil.reshape(height, width),
        left_wrist_px=to_px(heads[labels.index("wrist.L")]),
        right_wrist_px=to_px(heads[labels.index("wrist.R")]),
    )


# The person's LEFT arm raised above the head (rotation of 'upperarm01.L' about its local
# Y axis; measured: the left wrist moves from z=0.12 m to z=0.66 m, above the head bone).
LEFT_ARM_UP = {"upperarm01.L": (0.0, -0.8 * math.pi / 2, 0.0)}


@pytest.fixture(scope="module")
def anny_left_arm_up() -> Render:
    """Anny with the person's LEFT arm raised, front view (H, W) = (320, 256)."""
    return _render_anny(LEFT_ARM_UP)
