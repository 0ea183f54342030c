"""One synthetic training sample: a random clothed Anny person in a random pose, rendered ICON-style.

``make_synthetic_sample(seed)`` draws a subject (phenotype + outfit, :func:`random_subject`), builds its
canonical clothed mesh (:func:`synthetic.clothing.build_clothed_mesh`), poses it with a random
(often hard) SMPL-X pose by LBS, and renders it with an orthographic 512x512 crop camera: RGB (Lambert,
vertex colours, random background), mask, clothed and naked-body normal maps (front / back), plus
occupancy samples labelled by the winding number of the clothed mesh.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from foundation.body.model import BodyModel, build_body_model
from foundation.body.params import SMPLXParams
from foundation.camera import Camera
from foundation.geometry.sampling import sample_occupancy
from foundation.io.atomic import atomic_save_npz
from synthetic.clothing import ClothedMesh, build_clothed_mesh
from synthetic.garments import Outfit, random_loose_outfit, random_outfit
from synthetic.poses import random_pose
from synthetic.render import ortho_crop_camera, random_background, render_normal_maps, render_rgb

log = logging.getLogger(__name__)

__all__ = ["SampleConfig", "Subject", "SyntheticSample", "random_subject", "clothe_subject",
           "make_synthetic_sample"]


@dataclass(frozen=True)
class SampleConfig:
    """How to make one sample.

    Attributes:
        image_size: side of the square orthographic crop, pixels.
        margin: crop side = margin x the person's larger extent.
        voxel: marching-cubes spacing of the clothed mesh, metres.
        n_surface: occupancy samples near the surface (surface points + N(0, sigma^2), sigma drawn
            from ``sigmas``); n_uniform: uniform samples in the mesh box padded by ``box_pad``.
        ssaa: RGB supersampling factor (anti-aliased edges); maps are rendered at 1x.
        hard_prob: probability of a hard pose archetype; beta_range: |beta| bound for betas[:5].
    """

    image_size: int = 512
    margin: float = 1.1
    voxel: float = 0.005
    n_surface: int = 8000
    n_uniform: int = 2000
    sigmas: tuple = (0.01, 0.03, 0.05)
    box_pad: float = 0.05
    ssaa: int = 2
    hard_prob: float = 0.5
    beta_range: float = 2.0


@dataclass(frozen=True)
class Subject:
    """A synthetic person: Anny phenotype (``betas`` (NB,)) and outfit."""

    betas: tuple
    outfit: Outfit

    def betas_tensor(self) -> torch.Tensor:
        return torch.tensor([self.betas], dtype=torch.float32)

    def to_json(self) -> str:
        return json.dumps({"betas": list(self.betas), "outfit": json.loads(self.outfit.to_json())})

    @staticmethod
    def from_json(text: str) -> "Subject":
        d = json.loads(text)
        return Subject(tuple(d["betas"]), Outfit.from_json(json.dumps(d["outfit"])))


def random_subject(rng: np.random.Generator, num_betas: int = 10, beta_range: float = 2.0,
                   loose: str | bool = False) -> Subject:
    """Random phenotype (betas[:5] uniform in +-beta_range, age beta kept adult-ish) and outfit.

    ``loose``: False = :func:`random_outfit`; True or a style name = :func:`random_loose_outfit`.
    """
    b = np.zeros(num_betas)
    b[:5] = rng.uniform(-beta_range, beta_range, 5)
    b[5] = rng.uniform(-0.7, beta_range)  # age: mostly adults
    if loose:
        outfit = random_loose_outfit(rng, None if loose is True else str(loose))
    else:
        outfit = random_outfit(rng)
    return Subject(tuple(float(x) for x in b), outfit)


def clothe_subject(body: BodyModel, subject: Subject, voxel: float = 0.005) -> ClothedMesh:
    """Canonical clothed mesh of ``subject`` on ``body`` (the shaped zero-pose body)."""
    p = body.zero_params(1)
    p.betas = subject.betas_tensor()
    with torch.no_grad():
        out = body(p)
    return build_clothed_mesh(out.rest_vertices[0], body.faces, body.lbs_weights, out.rest_joints[0],
                              subject.outfit, voxel=voxel)


def _params_dict(params: SMPLXParams) -> dict[str, np.ndarray]:
    return {f"params_{k}": v for k, v in params.as_dict().items()}


def _params_from(d) -> SMPLXParams:
    return SMPLXParams.from_dict({f.name: d[f"params_{f.name}"] for f in fields(SMPLXParams)})


@dataclass
class SyntheticSample:
    """One rendered synthetic person (H = W = image size; world = SMPL-X frame, metres).

    Attributes:
        params: SMPLXParams (B = 1) of the posed body (``transl`` = 0).
        camera: orthographic crop camera.
        image: (H, W, 3) uint8 RGB; mask: (H, W) bool (clothed mesh hit).
        normal_front / normal_back: (H, W, 3) float32 clothed normals, view frame, zero off the mask
            (back = last hit along the front rays).
        body_normal_front / body_normal_back: (H, W, 3) float32 naked-body normals, same convention.
        clothed_verts: (V, 3) posed clothed mesh (world); clothed_faces: (F, 3) int64 (watertight);
        clothed_colors: (V, 3) uint8.
        body_verts: (Vb, 3) posed body (world); body_faces: (Fb, 3) int64.
        occ_points: (N, 3) float32 world; occ_labels: (N,) bool, True inside the clothed mesh.
        subject_json: the :class:`Subject` (betas + outfit) as JSON; archetype: pose archetype; seed.
    """

    params: SMPLXParams
    camera: Camera
    image: np.ndarray
    mask: np.ndarray
    normal_front: np.ndarray
    normal_back: np.ndarray
    body_normal_front: np.ndarray
    body_normal_back: np.ndarray
    clothed_verts: np.ndarray
    clothed_faces: np.ndarray
    clothed_colors: np.ndarray
    body_verts: np.ndarray
    body_faces: np.ndarray
    occ_points: np.ndarray
    occ_labels: np.ndarray
    subject_json: str = ""
    archetype: str = ""
    seed: int = 0
    timings: dict = field(default_factory=dict)

    @property
    def subject(self) -> Subject:
        return Subject.from_json(self.subject_json)

    def save(self, path: str | Path) -> None:
        """One compressed npz (normal maps stored as float16), written atomically."""
        arrays = {k: getattr(self, k) for k in (
            "image", "mask", "clothed_verts", "clothed_faces", "clothed_colors", "body_verts", "body_faces",
            "occ_points", "occ_labels")}
        for k in ("normal_front", "normal_back", "body_normal_front", "body_normal_back"):
            arrays[k] = getattr(self, k).astype(np.float16)
        meta = {"camera": self.camera.to_dict(), "subject": self.subject_json, "archetype": self.archetype,
                "seed": self.seed, "timings": self.timings}
        atomic_save_npz(path, meta=np.array(json.dumps(meta)), **arrays, **_params_dict(self.params))

    @staticmethod
    def load(path: str | Path) -> "SyntheticSample":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such synthetic sample (make one with tools/make_synthetic.py)")
        with np.load(path) as d:
            try:
                meta = json.loads(str(d["meta"]))
                kw = {k: d[k] for k in ("image", "mask", "clothed_verts", "clothed_faces", "clothed_colors",
                                        "body_verts", "body_faces", "occ_points", "occ_labels")}
                for k in ("normal_front", "normal_back", "body_normal_front", "body_normal_back"):
                    kw[k] = d[k].astype(np.float32)
                params = _params_from(d)
            except KeyError as e:
                raise KeyError(f"{path}: not a synthetic sample, missing {e}") from None
        return SyntheticSample(params, Camera.from_dict(meta["camera"]), subject_json=meta["subject"],
                               archetype=meta["archetype"], seed=int(meta["seed"]), timings=meta.get("timings", {}),
                               **kw)


def random_light(rng: np.random.Generator, towards: np.ndarray) -> torch.Tensor:
    """(3,) world direction to a light roughly on the camera's side (``towards`` = unit vector to the camera)."""
    towards = np.asarray(towards, np.float64)
    side = np.cross(towards, [0.0, 1.0, 0.0])
    side /= max(np.linalg.norm(side), 1e-9)
    d = towards + side * rng.uniform(-0.7, 0.7) + np.array([0.0, rng.uniform(0.0, 0.9), 0.0])
    return torch.tensor(d / np.linalg.norm(d), dtype=torch.float32)


def make_synthetic_sample(seed: int, cfg: SampleConfig = SampleConfig(), body: BodyModel | None = None,
                          subject: Subject | None = None, clothed: ClothedMesh | None = None) -> SyntheticSample:
    """Make one sample, fully determined by ``seed`` (and ``cfg``).

    Args:
        seed: random seed (subject, pose, camera jitter, background, light, occupancy).
        body: the Anny body model (built if None; pass one when making many samples).
        subject, clothed: reuse a subject / its canonical clothed mesh instead of drawing one.
    """
    body = build_body_model() if body is None else body
    rng = np.random.default_rng(seed)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if subject is None:
        subject = random_subject(rng, body.num_betas, cfg.beta_range)
    if clothed is None:
        clothed = clothe_subject(body, subject, cfg.voxel)
    timings["clothe"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    orient, pose, lh, rh, name = random_pose(rng, hard_prob=cfg.hard_prob)
    params = body.zero_params(1)
    params.betas = subject.betas_tensor()
    params.global_orient = torch.tensor(orient[None], dtype=torch.float32)
    params.body_pose = torch.tensor(pose[None], dtype=torch.float32)
    params.left_hand_pose = torch.tensor(lh[None], dtype=torch.float32)
    params.right_hand_pose = torch.tensor(rh[None], dtype=torch.float32)
    with torch.no_grad():
        out = body(params)
        verts = clothed.pose(out.joint_transforms)[0]
    bverts = out.vertices[0]
    cam = ortho_crop_camera(verts, cfg.image_size, cfg.margin, jitter=rng.uniform(-1, 1, 3) * [0.03, 0.03, 0.05])
    timings["pose"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    nm = render_normal_maps(verts, clothed.faces, cam)
    bnm = render_normal_maps(bverts, body.faces, cam)
    bg = random_background(rng, cam.height, cam.width)
    light = random_light(rng, np.array([0.0, 0.0, 1.0]))
    image, _ = render_rgb(verts, clothed.faces, clothed.colors, cam, bg, light, ssaa=cfg.ssaa,
                          ambient=float(rng.uniform(0.25, 0.45)))
    timings["render"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    pts, labels = sample_occupancy(verts, clothed.faces, cfg.n_surface, cfg.n_uniform, rng, cfg.sigmas, cfg.box_pad)
    timings["occupancy"] = time.perf_counter() - t0
    return SyntheticSample(
        params=params, camera=cam, image=image, mask=nm.mask_front.numpy(),
        normal_front=nm.front.numpy(), normal_back=nm.back.numpy(),
        body_normal_front=bnm.front.numpy(), body_normal_back=bnm.back.numpy(),
        clothed_verts=verts.numpy(), clothed_faces=clothed.faces.numpy(), clothed_colors=clothed.colors.numpy(),
        body_verts=bverts.numpy(), body_faces=body.faces.numpy(), occ_points=pts.numpy(),
        occ_labels=labels.numpy(), subject_json=subject.to_json(), archetype=name, seed=seed, timings=timings)
