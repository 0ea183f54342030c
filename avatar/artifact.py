"""``Avatar``: the trained SCANimate-style avatar (the avatar stage's artifact).

On disk (one directory)::

    avatar.safetensors   fields (sdf.*, skin.*, color.* if trained), body prior (prior_verts, prior_weights),
                         betas, canonical mesh (mesh_verts, mesh_faces, mesh_colors, mesh_weights, ...)
                         UV atlas (atlas_*) and texture of a fitted avatar, the fusion mesh (fusion_mesh_*),
                         its pose-dependent offsets (pose_space.*) and colours (pose_texture.*), the fitted
                         training poses (train_poses)
    avatar.json          config, architecture, stats
    canonical.ply        the canonical mesh with vertex colours (for viewing)
    canonical.obj/.mtl, canonical_albedo.png   the textured canonical mesh (fitted avatars)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from foundation.body.params import SMPLXParams
from foundation.io.atomic import atomic_path, atomic_write_json
from foundation.texture import UVAtlas, UVTexture, write_textured_obj
from avatar.extract import CanonicalMesh, pose_canonical_mesh
from avatar.pose_space import PoseSpaceDeformation, PoseTexture
from avatar.fields import BodySkinPrior, CanonicalSDF, ColorField, SkinningField, spread_matrix

__all__ = ["Avatar"]

_MESH_KEYS = ("verts", "faces", "colors", "weights", "normals", "sdf0")


@dataclass(frozen=True, eq=False)
class Avatar:
    """A clothed avatar in canonical space, animatable with SMPL-X poses.

    Attributes:
        sdf: canonical SDF conditioned on pose features; color: canonical albedo field (None when
            the colours were baked from the samples, ``AvatarConfig.color_mode="samples"``);
        skin: canonical skinning field W_c(x_c).
        mesh: canonical mesh extracted once (fixed topology for animation).
        prior_verts: (V_body, 3) canonical body vertices; prior_weights: (V_body, 55) body weights
            (the skinning prior the field refines).
        betas: (1, NB) body shape.
        arch: constructor arguments of the fields; config: the avatar stage's config; stats: metrics.
        body_backend: body model the avatar was trained with ("anny" / "smplx").
        atlas: UV atlas of ``mesh`` and texture: (R, R, 3) uint8 albedo (the avatar fitted to the video,
            :mod:`avatar.video_fit`; None for a fusion-only avatar, coloured by ``mesh.colors``).
        fusion_mesh: the ICON-fusion canonical mesh the fit started from (for comparison; None if not fitted).
        pose_space: a fitted avatar's pose-dependent offsets of ``mesh`` (:mod:`avatar.pose_space`; its pose
            correction, in place of the SDF's); None: none.
        pose_texture: its pose-dependent colour corrections (:class:`~avatar.pose_space.PoseTexture`, blended by
            ``pose_space``'s weights; :meth:`render_colors` with a pose); None: one texture for every pose.
        train_poses: (n, 23, 3) float32, a fitted avatar's training frames as the fit left them: rows 0-21 the
            global orientation and the 21 body-joint rotations (axis-angle), row 22 the translation (world
            metres); frame ``i`` is clip frame ``stats["video_fit"]["frames"][i]``. None: not recorded.
    """

    sdf: CanonicalSDF
    color: ColorField | None
    skin: SkinningField
    mesh: CanonicalMesh
    prior_verts: torch.Tensor
    prior_weights: torch.Tensor
    betas: torch.Tensor
    arch: dict
    config: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    body_backend: str = "anny"
    atlas: UVAtlas | None = None
    texture: np.ndarray | None = None
    fusion_mesh: CanonicalMesh | None = None
    pose_space: PoseSpaceDeformation | None = None
    pose_texture: PoseTexture | None = None
    train_poses: torch.Tensor | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "spread", spread_matrix(self.prior_weights.shape[1]))  # derived, not saved
        for m in (self.sdf, self.color, self.skin):
            if m is not None:
                m.eval()

    def corrector(self, spacing: float | None = None):
        """The :class:`~avatar.posing.PoseCorrector` of the canonical mesh (built once, cached).

        ``spacing``: anchor spacing (m); None: ``arch["correction_spacing"]`` (0.03 if absent), 0: exact.
        """
        from avatar.posing import PoseCorrector

        s = float(self.arch.get("correction_spacing", 0.03) if spacing is None else spacing)
        cache = self.__dict__.setdefault("_correctors", {})
        if s not in cache:
            cache[s] = PoseCorrector(self.sdf, self.mesh.verts, self.mesh.normals, self.mesh.weights, self.spread,
                                     spacing=s, max_offset=self.arch.get("max_offset", 0.05))
        return cache[s]

    def skin_prior(self) -> BodySkinPrior:
        return BodySkinPrior(self.prior_verts, self.prior_weights, self.arch["skin_knn"], self.arch["skin_sigma"])

    # ------------------------------------------------------------------ use
    def params_for(self, params: SMPLXParams) -> SMPLXParams:
        """``params`` with the avatar's betas (the avatar is bound to its own shape)."""
        p = params.clone()
        p.betas = self.betas.to(p.betas.dtype).expand(params.batch_size, -1).clone()
        return p

    @torch.no_grad()
    def rest_joints(self, body) -> torch.Tensor:
        """(55, 3) canonical joints of the avatar's shape on ``body`` (cached per body model)."""
        cache = self.__dict__.setdefault("_rest_joints", {})
        if id(body) not in cache:
            cache[id(body)] = body.rest(self.betas.float())[1][0].float()
        return cache[id(body)]

    @torch.no_grad()
    def pose(self, params: SMPLXParams, body, correct: bool | None = None, chunk: int = 16,
             return_transforms: bool = False):
        """Posed canonical-mesh vertices.

        Args:
            params: (B frames) SMPL-X parameters (their betas are replaced by the avatar's).
            body: the body model the avatar was trained with.
            correct: apply the pose-dependent correction (a fitted avatar's ``pose_space``, else the canonical
                SDF's); None: the avatar's own choice (``arch["pose_correction"]``, set by the held-out check
                of the avatar stage, or by the video fit).
            chunk: frames per batched evaluation.
            return_transforms: also return the (B, 55, 4, 4) joint transforms.
        Returns:
            (B, V, 3) world-frame vertices, metres (faces: ``self.mesh.faces``).
        """
        from avatar.posing import pose_transforms

        if correct is None:
            correct = bool(self.arch.get("pose_correction", True))
        rest_j = self.rest_joints(body)
        psd = self.pose_space
        corrector = self.corrector() if correct and psd is None else None
        verts, trans = [], []
        for s in range(0, params.batch_size, chunk):
            ps = params[s : s + chunk]
            T = pose_transforms(body, ps, rest_j)
            if psd is not None:
                from avatar.posing import skin_vertices

                v = self.mesh.verts[None] + psd.offsets(ps.full_pose().float()) if correct else self.mesh.verts
                verts.append(skin_vertices(v, self.mesh.weights, T.float()))
            else:
                verts.append(pose_canonical_mesh(self.sdf, self.mesh, ps.full_pose(), T, self.spread, correct=correct,
                                                 max_offset=self.arch.get("max_offset", 0.05), corrector=corrector))
            trans.append(T)
        out = torch.cat(verts)
        return (out, torch.cat(trans)) if return_transforms else out

    # ------------------------------------------------------------------ io
    def save(self, directory: str | Path) -> None:
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for name, m in (("sdf", self.sdf), ("color", self.color), ("skin", self.skin)):
            if m is None:
                continue
            tensors.update({f"{name}.{k}": v.detach().contiguous() for k, v in m.state_dict().items()})
        for k in _MESH_KEYS:
            tensors[f"mesh_{k}"] = getattr(self.mesh, k).contiguous()
        tensors["prior_verts"] = self.prior_verts.contiguous()
        tensors["prior_weights"] = self.prior_weights.contiguous()
        tensors["betas"] = self.betas.contiguous()
        if self.atlas is not None:
            tensors.update(atlas_vmap=self.atlas.vmap.contiguous(), atlas_faces=self.atlas.faces.contiguous(),
                           atlas_uvs=self.atlas.uvs.contiguous(),
                           texture=torch.from_numpy(np.ascontiguousarray(self.texture, np.uint8)))
        if self.fusion_mesh is not None:
            for k in _MESH_KEYS:
                tensors[f"fusion_mesh_{k}"] = getattr(self.fusion_mesh, k).contiguous()
        if self.pose_space is not None:
            tensors.update(self.pose_space.tensors())
        if self.pose_texture is not None:
            tensors.update(self.pose_texture.tensors())
        if self.train_poses is not None:
            tensors["train_poses"] = self.train_poses.float().contiguous()
        with atomic_path(d / "avatar.safetensors") as tmp:
            save_file(tensors, str(tmp))
        atomic_write_json(d / "avatar.json", {"arch": self.arch, "config": self.config, "stats": self.stats,
                                              "body_backend": self.body_backend})
        import trimesh

        mesh = trimesh.Trimesh(self.mesh.verts.numpy(), self.mesh.faces.numpy(),
                               vertex_colors=self.mesh.colors.numpy(), process=False)
        with atomic_path(d / "canonical.ply") as tmp:
            mesh.export(tmp, file_type="ply")
        if self.atlas is not None:  # the textured canonical avatar: OBJ + MTL + PNG
            write_textured_obj(d / "canonical.obj", self.mesh.verts.numpy(), self.mesh.faces.numpy(),
                               self.atlas.face_uvs.numpy(), self.texture, self.mesh.normals.numpy())

    @staticmethod
    def load(directory: str | Path) -> "Avatar":
        from safetensors.torch import load_file

        d = Path(directory)
        for fname in ("avatar.safetensors", "avatar.json"):
            if not (d / fname).exists():
                raise FileNotFoundError(f"{d}: not an avatar directory ({fname} is missing); "
                                        f"re-run the avatar stage (force=[avatar])")
        meta = json.loads((d / "avatar.json").read_text())
        t = load_file(str(d / "avatar.safetensors"))
        a = meta["arch"]
        sd = lambda p: {k[len(p) + 1:]: v for k, v in t.items() if k.startswith(p + ".")}  # noqa: E731
        s_sd = sd("sdf")
        sdf = CanonicalSDF(s_sd["prior_grid"], s_sd["grid_min"], s_sd["grid_max"], s_sd["norm.center"],
                           float(s_sd["norm.scale"]), a["sdf_hidden"], a["sdf_layers"], a["sdf_freqs"], a["pose_dim"])
        color = None
        if any(k.startswith("color.") for k in t):
            color = ColorField(s_sd["norm.center"], 1.0, a["color_hidden"], a["color_layers"], a["color_freqs"])
        skin = SkinningField(s_sd["norm.center"], 1.0, t["prior_weights"].shape[1], a["skin_hidden"], a["skin_layers"],
                             a["skin_freqs"])
        for m, p in ((sdf, "sdf"), (color, "color"), (skin, "skin")):
            if m is None:
                continue
            try:
                m.load_state_dict(sd(p))
            except RuntimeError as e:
                raise ValueError(f"{d / 'avatar.safetensors'}: '{p}' weights do not match the architecture in "
                                 f"avatar.json ({e}); re-run the avatar stage") from e
        mesh = CanonicalMesh(**{k: t[f"mesh_{k}"] for k in _MESH_KEYS})
        atlas = texture = fusion = None
        if "atlas_uvs" in t:
            atlas = UVAtlas(t["atlas_vmap"], t["atlas_faces"], t["atlas_uvs"])
            texture = t["texture"].numpy()
        if "fusion_mesh_verts" in t:
            fusion = CanonicalMesh(**{k: t[f"fusion_mesh_{k}"] for k in _MESH_KEYS})
        return Avatar(sdf, color, skin, mesh, t["prior_verts"], t["prior_weights"], t["betas"], a,
                      meta.get("config", {}), meta.get("stats", {}), meta.get("body_backend", "anny"),
                      atlas, texture, fusion, PoseSpaceDeformation.from_tensors(t), PoseTexture.from_tensors(t),
                      t.get("train_poses"))

    def render_colors(self, pose: torch.Tensor | None = None, correct: bool | None = None):
        """What renders the avatar's appearance: a :class:`~foundation.texture.UVTexture`, else vertex colours.

        pose: (55, 3) one frame's local axis-angle pose (``SMPLXParams.full_pose()[k]``): the texture at that pose
        (:attr:`pose_texture`); None, or an avatar without one: the shared texture (what the glTF carries).
        correct: as in :meth:`pose` (None: ``arch["pose_correction"]``); False: the shared texture."""
        if self.texture is None or self.atlas is None:
            return self.mesh.colors
        if correct is None:
            correct = bool(self.arch.get("pose_correction", True))
        image = self.texture
        if correct and pose is not None and self.pose_texture is not None and self.pose_space is not None:
            with torch.no_grad():
                fw = self.pose_space.frame_weights(pose.reshape(1, -1, 3).float().cpu())[0]
            image = self.pose_texture.apply(image, fw)
        return UVTexture(self.atlas.face_uvs, torch.from_numpy(np.ascontiguousarray(image)))

    def canonical_colors(self) -> np.ndarray:
        """(V, 3) uint8 vertex colours of the canonical mesh."""
        return self.mesh.colors.numpy()
