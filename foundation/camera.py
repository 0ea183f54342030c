"""Cameras shared by every stage.

Conventions (used project-wide):

* World frame: the SMPL-X frame, metres, +Y up, the body faces +Z when global_orient = 0.
* Camera frame: OpenCV, +X right, +Y down, +Z forward (into the scene).
  ``x_cam = R @ x_world + t``.
* Pixels: ``u`` right, ``v`` down; pixel centres at integer + 0.5.
* Perspective: ``u = fx * x/z + cx``.  Orthographic: ``u = fx * x + cx`` (``fx`` in px per metre).
* Normal maps are stored in the *view* frame: +X right, +Y up, +Z towards the viewer
  (ICON's convention), i.e. ``n_view = diag(1, -1, -1) @ R @ n_world``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

CV_TO_VIEW = torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])


@dataclass(frozen=True)
class Camera:
    """A pinhole or orthographic camera with an image size.

    Attributes:
        width, height: image size in pixels.
        fx, fy, cx, cy: intrinsics (px; for ``ortho`` the focal terms are px per metre).
        R: (3, 3) world->camera rotation, nested lists (kept plain so the dataclass is hashable/JSON).
        t: (3,) world->camera translation, metres.
        ortho: orthographic projection if True.
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    R: tuple = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    t: tuple = (0.0, 0.0, 0.0)
    ortho: bool = False

    # ------------------------------------------------------------------ constructors
    @staticmethod
    def look_at(
        eye, target, up=(0.0, 1.0, 0.0), *, width: int, height: int, fov_deg: float | None = 40.0,
        ortho_scale: float | None = None,
    ) -> "Camera":
        """Camera at ``eye`` looking at ``target`` (world, metres).

        ``fov_deg`` gives a perspective camera with that vertical field of view;
        ``ortho_scale`` (metres covered by the image height) gives an orthographic one.
        """
        eye = np.asarray(eye, np.float64)
        target = np.asarray(target, np.float64)
        z = target - eye
        z /= np.linalg.norm(z)
        x = np.cross(-np.asarray(up, np.float64), z)  # OpenCV: x = y * z with y = -up
        if np.linalg.norm(x) < 1e-8:
            raise ValueError("look_at: 'up' is parallel to the viewing direction")
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        R = np.stack([x, y, z])
        t = -R @ eye
        if ortho_scale is not None:
            f = height / float(ortho_scale)
            ortho = True
        else:
            f = 0.5 * height / math.tan(math.radians(fov_deg) / 2)
            ortho = False
        return Camera(width, height, f, f, width / 2, height / 2,
                      tuple(map(tuple, R.tolist())), tuple(t.tolist()), ortho)

    # ------------------------------------------------------------------ tensors
    def R_t(self, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """(3, 3) rotation and (3,) translation as tensors."""
        return (torch.tensor(self.R, device=device, dtype=dtype), torch.tensor(self.t, device=device, dtype=dtype))

    def K(self, device=None, dtype=torch.float32) -> torch.Tensor:
        """(3, 3) intrinsics matrix."""
        return torch.tensor([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], device=device, dtype=dtype)

    @property
    def center(self) -> np.ndarray:
        """(3,) camera centre in world (for ortho: a point on the optical axis)."""
        R = np.asarray(self.R)
        return -R.T @ np.asarray(self.t)

    def to_camera(self, points: torch.Tensor) -> torch.Tensor:
        """World points (..., 3) -> camera-frame points (..., 3)."""
        R, t = self.R_t(points.device, points.dtype)
        return points @ R.T + t

    def project(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """World points (..., 3) -> pixels (..., 2) and camera depth (...,) (metres along +Z)."""
        pc = self.to_camera(points)
        z = pc[..., 2]
        if self.ortho:
            xy = pc[..., :2]
        else:
            xy = pc[..., :2] / z.clamp(min=1e-6)[..., None]
        uv = torch.stack([xy[..., 0] * self.fx + self.cx, xy[..., 1] * self.fy + self.cy], -1)
        return uv, z

    def unproject(self, uv: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Pixels (..., 2) at camera depth z (...,) -> world points (..., 3); inverse of :meth:`project`."""
        x = (uv[..., 0] - self.cx) / self.fx
        y = (uv[..., 1] - self.cy) / self.fy
        if not self.ortho:
            x, y = x * z, y * z
        R, t = self.R_t(uv.device, uv.dtype)
        return (torch.stack([x, y, z], -1) - t) @ R

    def rays(self, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel rays through pixel centres, world frame.

        Returns:
            origins: (H, W, 3), directions: (H, W, 3) unit vectors.
            For orthographic cameras the origins lie on the plane ``z_cam = -10`` m (behind any
            scene) and every direction equals the optical axis.
        """
        R, t = self.R_t(device, dtype)
        v, u = torch.meshgrid(
            torch.arange(self.height, device=device, dtype=dtype) + 0.5,
            torch.arange(self.width, device=device, dtype=dtype) + 0.5,
            indexing="ij",
        )
        x = (u - self.cx) / self.fx
        y = (v - self.cy) / self.fy
        if self.ortho:
            o_cam = torch.stack([x, y, torch.full_like(x, -10.0)], -1)
            d_cam = torch.zeros_like(o_cam)
            d_cam[..., 2] = 1.0
        else:
            o_cam = torch.zeros(self.height, self.width, 3, device=device, dtype=dtype)
            d_cam = torch.stack([x, y, torch.ones_like(x)], -1)
            d_cam = d_cam / d_cam.norm(dim=-1, keepdim=True)
        origins = (o_cam - t) @ R  # R^T (o - t)
        dirs = d_cam @ R
        return origins, dirs

    def view_rotation(self, device=None, dtype=torch.float32) -> torch.Tensor:
        """(3, 3) world -> view-frame rotation used for normal maps (x right, y up, z to viewer)."""
        R, _ = self.R_t(device, dtype)
        return CV_TO_VIEW.to(device=device, dtype=dtype) @ R

    # ------------------------------------------------------------------ edits
    def resized(self, width: int, height: int) -> "Camera":
        """Same view at another resolution."""
        sx, sy = width / self.width, height / self.height
        return replace(self, width=width, height=height, fx=self.fx * sx, fy=self.fy * sy,
                       cx=self.cx * sx, cy=self.cy * sy)

    def cropped(self, x0: float, y0: float, w: float, h: float, out_size: int) -> "Camera":
        """Camera of the square crop [x0, x0+w) x [y0, y0+h) resampled to ``out_size`` px."""
        s = out_size / w
        return replace(self, width=out_size, height=int(round(h * s)), fx=self.fx * s, fy=self.fy * s,
                       cx=(self.cx - x0) * s, cy=(self.cy - y0) * s)

    # ------------------------------------------------------------------ io
    def to_dict(self) -> dict:
        d = asdict(self)
        d["R"] = [list(r) for r in self.R]
        d["t"] = list(self.t)
        return d

    @staticmethod
    def from_dict(d: dict) -> "Camera":
        d = dict(d)
        d["R"] = tuple(tuple(float(x) for x in r) for r in d["R"])
        d["t"] = tuple(float(x) for x in d["t"])
        return Camera(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())
