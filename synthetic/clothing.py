"""The clothed subject: an implicit clothed surface in canonical space, extracted watertight, coloured
and skinned so it can be posed like the body.

``clothed_sdf(x) = min(body_sdf(x) - offset(x), skirt_sdf(x))`` where ``offset`` stacks the garment
layers of :mod:`synthetic.garments` (interpolated at the closest body point, plus displacement
noise for wrinkles) and ``skirt_sdf`` is an elliptic, flared, folded hull bridging the legs.
The zero level set is extracted by narrow-band marching cubes (:mod:`synthetic.implicit`);
skinning weights are copied from the closest canonical body point (blended across both legs on
skirts, so they swing with the legs instead of tearing).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from foundation.body.lbs import skin_points
from foundation.geometry.normals import vertex_normals
from synthetic.garments import (
    BodyLandmarks, Garment, Outfit, garment_coverage, garment_thickness, joint_groups, smoothstep,
)
from synthetic.implicit import MeshSDF, component_labels, extract_narrow_band
from synthetic.noise import fbm, fbm_multi, perlin

log = logging.getLogger(__name__)

__all__ = ["ClothedMesh", "ClothedField", "SkirtHull", "build_clothed_mesh", "SKIN_LABEL"]

SKIN_LABEL = -1
SKIN_OFFSET = 0.001  # the whole surface sits 1 mm out, so marching-cubes chords never cut into the body


@dataclass
class ClothedMesh:
    """A subject's canonical clothed mesh (zero pose of its shaped body, SMPL-X frame, metres).

    Attributes:
        verts: (V, 3) float32 canonical vertices.
        faces: (F, 3) int64, counter-clockwise seen from outside; the mesh is closed (watertight).
        colors: (V, 3) uint8 albedo.
        weights: (V, 55) float32 skinning weights over SMPL-X joints (rows sum to 1).
        labels: (V,) int8: -1 skin, else the index of the garment in ``outfit.garments``.
    """

    verts: torch.Tensor
    faces: torch.Tensor
    colors: torch.Tensor
    weights: torch.Tensor
    labels: torch.Tensor

    def pose(self, joint_transforms: torch.Tensor) -> torch.Tensor:
        """Posed vertices (B, V, 3) for (B, 55, 4, 4) canonical->posed transforms (``BodyOutput.joint_transforms``)."""
        B = joint_transforms.shape[0]
        return skin_points(self.verts[None].expand(B, -1, -1), self.weights, joint_transforms)


class SkirtHull:
    """Signed distance (approximate, <= the true distance) to a flared elliptic skirt hull.

    The cross-section at height ``y`` is an ellipse centred at ``(0, cz)`` (the waist's centre) with
    semi-axes ``rx(y)`` and ``aspect * rx(y)``, wide enough everywhere to enclose the body (and the layers
    below the skirt) between the waist and the hem, growing by at least ``flare`` per metre below the
    hips, with folds and wrinkles towards the hem.
    """

    def __init__(self, g: Garment, verts: torch.Tensor, normals: torch.Tensor, under: torch.Tensor,
                 groups: dict[str, torch.Tensor], lm: BodyLandmarks) -> None:
        self.g = g
        self.waist_y = lm.pelvis_y + g.hem
        self.hem_y = lm.hip_y + g.extent * (lm.ankle_y - lm.hip_y)
        lower = groups["torso"] + groups["leg_l"] + groups["leg_r"] + groups["foot_l"] + groups["foot_r"]
        pts = verts + normals * (under + g.thickness)[:, None]
        pts = pts[lower > 0.5]
        step = 0.01
        self.ys = torch.arange(self.waist_y, self.hem_y - 2 * step, -step)
        waist = pts[(pts[:, 1] - self.waist_y).abs() < step]
        self.cz = float(0.5 * (waist[:, 2].amax() + waist[:, 2].amin()))
        self.aspect = float((waist[:, 2].amax() - waist[:, 2].amin()) / (2 * waist[:, 0].abs().amax()).clamp(min=1e-3))
        self.aspect = min(max(self.aspect, 0.6), 1.0)
        need = []
        for y in self.ys.tolist():
            s = pts[(pts[:, 1] - y).abs() < step]
            r = torch.sqrt(s[:, 0] ** 2 + ((s[:, 2] - self.cz) / self.aspect) ** 2).amax() if s.shape[0] else 0.0
            need.append(float(r))
        # radius profile: the concave majorant of the slices' needs (snug over the hips), flaring at least
        # ``g.flare`` per metre below, smoothed so the hull has no creases
        drop = (self.waist_y - self.ys).numpy()
        r = _concave_majorant(drop, np.asarray(need) + 0.006)
        slope = np.diff(r) / np.diff(drop)
        k = int(np.argmax(slope < g.flare)) if (slope < g.flare).any() else len(slope)
        r[k + 1:] = r[k] + g.flare * (drop[k + 1:] - drop[k])
        pad = np.pad(r, 4, mode="edge")
        kern = np.exp(-0.5 * (np.arange(-4, 5) / 2.0) ** 2)
        r = np.convolve(pad, kern / kern.sum(), mode="valid") + 0.002
        self.drop = torch.tensor(drop, dtype=torch.float32)
        self.rx = torch.tensor(r, dtype=torch.float32)
        rng = np.random.default_rng(g.seed)
        self.folds = int(rng.integers(6, 13))
        self.phase = float(rng.uniform(0, 2 * math.pi))
        self.fold_amp = float(rng.uniform(0.03, 0.08)) * min(1.0, 3 * g.flare + 0.4)

    def __call__(self, p: torch.Tensor) -> torch.Tensor:
        """(N, 3) canonical points -> (N,) signed distance bound, negative inside."""
        lo, hi = (torch.as_tensor(b, dtype=p.dtype) for b in self.contains_bbox())
        # the box holds the hull 5 cm in from its faces: outside it, (distance to the box + 5 cm) bounds
        # the distance to the hull from below (and creates no fake surface for the refinement)
        out = torch.maximum(lo - p, p - hi).amax(1) + 0.05
        inside = out < 0.05
        q = p[inside]
        x, y, z = q[:, 0], q[:, 1], q[:, 2]
        down = ((self.waist_y - y) / (self.waist_y - self.hem_y)).clamp(0, 1)
        f = ((self.waist_y - y) / float(self.drop[1])).clamp(0, len(self.rx) - 1.001)
        i0 = f.floor().long()
        rx = torch.lerp(self.rx[i0], self.rx[i0 + 1], f - i0)
        theta = torch.atan2(z - self.cz, x)
        wob = torch.sin(self.folds * theta + self.phase + 1.5 * perlin(q * 4.0, self.g.seed))
        # folds and wrinkles only push outwards, so the hull keeps enclosing the legs
        wrinkle = 0.5 * (1.0 + fbm(q, self.g.wrinkle_freq, self.g.seed))
        rx = rx * (1.0 + self.fold_amp * down * 0.5 * (1.0 + wob)) + self.g.wrinkle_amp * down * wrinkle
        rz = rx * self.aspect
        r = torch.sqrt((x / rx) ** 2 + ((z - self.cz) / rz) ** 2)
        side = (r - 1.0) * rz
        d = torch.maximum(side, torch.maximum(y - self.waist_y, self.hem_y - y))
        if self.g.neck_depth > 0:  # an open front (long coat): no hull where |x| < half-width in front
            half = self.g.neck_depth * (0.6 + 0.8 * down)
            d = torch.maximum(d, torch.minimum(half - x.abs(), z - self.cz))  # minus the box |x| < half, z > cz
        out[inside] = d
        return out

    def contains_bbox(self) -> tuple[np.ndarray, np.ndarray]:
        """Corners (3,) of a box holding the hull with a 5 cm margin."""
        r = float(self.rx.max()) * (1 + self.fold_amp) + self.g.wrinkle_amp + 0.05
        return (np.array([-r, self.hem_y - 0.05, self.cz - r]), np.array([r, self.waist_y + 0.05, self.cz + r]))


def _concave_majorant(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Smallest concave piecewise-linear function >= the points (x increasing), evaluated at ``x``."""
    hull: list[int] = []
    for i in range(len(x)):
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # drop b if it lies below the chord a -> i
            if (y[b] - y[a]) * (x[i] - x[a]) <= (y[i] - y[a]) * (x[b] - x[a]):
                hull.pop()
            else:
                break
        hull.append(i)
    return np.interp(x, x[hull], y[hull])


class ClothedField:
    """The clothed implicit surface of one outfit over one canonical body.

    Args:
        verts: (V, 3) canonical body vertices; faces: (F, 3); lbs_weights: (V, 55).
        rest_joints: (55, 3) canonical joints.
        outfit: the garments (bottom layer first).
    """

    def __init__(self, verts: torch.Tensor, faces: torch.Tensor, lbs_weights: torch.Tensor,
                 rest_joints: torch.Tensor, outfit: Outfit) -> None:
        self.verts = verts.detach().float()
        self.faces_all = faces.long()
        # the body proper: the largest closed component (Anny's eyeballs and teeth are separate)
        flab = component_labels(self.faces_all.numpy(), self.verts.shape[0])
        counts = np.bincount(flab)
        self.faces = self.faces_all[torch.from_numpy(flab == counts.argmax())]
        order = np.argsort(-counts)
        self.mouth = None
        if len(order) > 1:  # the biggest small part sits in the mouth (Anny's teeth/tongue)
            part = self.verts[self.faces_all[torch.from_numpy(flab == order[1])].reshape(-1)]
            self.mouth = 0.5 * (part.amax(0) + part.amin(0))
        self.body = MeshSDF(self.verts, self.faces)
        self.weights = lbs_weights.float()
        self.outfit = outfit
        self.lm = BodyLandmarks.from_body(self.verts, rest_joints)
        self.joints = rest_joints.float()
        self.groups = joint_groups(self.weights)
        gs = list(outfit.garments)
        self.cov = torch.stack([garment_coverage(g, self.verts, self.groups, self.lm) for g in gs], 1) if gs \
            else torch.zeros(self.verts.shape[0], 0)
        self.own = torch.stack([garment_thickness(g, self.verts, self.lm) for g in gs], 1) if gs \
            else torch.zeros(self.verts.shape[0], 0)
        self.cov_own = torch.cat([self.cov, self.own], 1)
        self._freqs = [g.wrinkle_freq for g in gs]
        self._seeds = [g.seed for g in gs]
        self._amps = torch.tensor([g.wrinkle_amp for g in gs])
        self._min_own = torch.tensor([0.5 * g.thickness for g in gs])
        self.skirt_idx = next((i for i, g in enumerate(gs) if g.kind == "skirt"), None)
        self.skirt = None
        if self.skirt_idx is not None:
            under = self._layers(self.cov[:, : self.skirt_idx + 1], self.own[:, : self.skirt_idx + 1])[0]
            self.skirt = SkirtHull(gs[self.skirt_idx], self.verts, vertex_normals(self.verts, self.faces), under,
                                   self.groups, self.lm)
        self.max_offset = float(self._layers(self.cov, self.own + self._amps)[0].max()) if gs else 0.0

    # ---------------------------------------------------------------------------------- field
    def _layers(self, cov: torch.Tensor, own: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stack layers: (N,) total offset and (N,) long index of the top garment (-1: skin)."""
        running = torch.zeros(cov.shape[0])
        top = torch.full((cov.shape[0],), SKIN_LABEL, dtype=torch.long)
        for g in range(cov.shape[1]):
            running = torch.maximum(running, cov[:, g] * (running + own[:, g]))
            top = torch.where(cov[:, g] > 0.5, torch.full_like(top, g), top)
        return running, top

    def _at(self, p: torch.Tensor):
        q = self.body.query(p)
        G = self.cov.shape[1]
        both = q.interpolate(self.faces, self.cov_own)
        cov, own = both[:, :G], both[:, G:]
        if G:
            n = fbm_multi(q.closest, self._freqs, self._seeds, cov * self._amps)
            own = torch.maximum(own + self._amps * n, self._min_own)
        offset, top = self._layers(cov, own)
        value = q.sdf - offset - SKIN_OFFSET
        return q, value, top

    def __call__(self, p: torch.Tensor) -> torch.Tensor:
        """(N, 3) canonical points -> (N,) clothed signed distance (approximate), negative inside."""
        _, value, _ = self._at(p)
        if self.skirt is not None:
            value = torch.minimum(value, self.skirt(p))
        return value

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:
        pad = self.max_offset + 0.03
        lo = self.verts.amin(0).numpy() - pad
        hi = self.verts.amax(0).numpy() + pad
        if self.skirt is not None:
            slo, shi = self.skirt.contains_bbox()
            lo, hi = np.minimum(lo, slo), np.maximum(hi, shi)
        return lo, hi

    # ---------------------------------------------------------------------------------- attributes
    def labels_and_weights(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,) long top-garment label (-1 skin) and (N, 55) skinning weights of surface points ``v``."""
        q, value, top = self._at(v)
        w = q.interpolate(self.faces, self.weights)
        if self.skirt is not None:
            on_skirt = self.skirt(v) < value
            top = torch.where(on_skirt, torch.full_like(top, self.skirt_idx), top)
            if bool(on_skirt.any()):
                w[on_skirt] = self._skirt_weights(v[on_skirt], w[on_skirt])
        return top, w / w.sum(1, keepdim=True)

    def _skirt_weights(self, v: torch.Tensor, w_closest: torch.Tensor) -> torch.Tensor:
        """Skirt points follow a blend of both legs at their height (left/right by x; the back partly the pelvis),
        the closest body point near the waist."""
        from foundation.body.skeleton import JOINT_INDEX as J

        out = []
        for side in ("left", "right"):
            hip, ankle = self.joints[J[f"{side}_hip"]], self.joints[J[f"{side}_ankle"]]
            s = ((v[:, 1] - hip[1]) / (ankle[1] - hip[1])).clamp(0, 1)
            axis = hip + s[:, None] * (ankle - hip)
            q = self.body.query(axis)
            out.append(q.interpolate(self.faces, self.weights))
        s_left = smoothstep(-0.05, 0.05, v[:, 0])[:, None]
        legs = s_left * out[0] + (1 - s_left) * out[1]
        # the back of the skirt hangs from the pelvis more than it follows the thighs (sitting, lunges)
        pelvis = torch.zeros_like(legs)
        pelvis[:, J["pelvis"]] = 1.0
        front = 0.35 + 0.65 * smoothstep(self.skirt.cz - 0.06, self.skirt.cz + 0.06, v[:, 2])[:, None]
        lower = front * legs + (1 - front) * pelvis
        c = smoothstep(self.lm.hip_y, self.lm.hip_y - 0.12, v[:, 1])[:, None]
        return (1 - c) * w_closest + c * lower

    def colors(self, v: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(N, 3) uint8 albedo of canonical surface points ``v`` with garment ``labels``."""
        o = self.outfit
        col = torch.tensor(o.skin, dtype=torch.float32).repeat(v.shape[0], 1)
        col = col * (1.0 + 0.04 * perlin(v * 40.0, 7))[:, None]
        for gi, g in enumerate(o.garments):
            sel = labels == gi
            if not bool(sel.any()):
                continue
            col[sel] = _pattern(g, v[sel])
        self._paint_face(v, labels, col)
        return (col.clamp(0, 1) * 255).round().to(torch.uint8)

    def _paint_face(self, v: torch.Tensor, labels: torch.Tensor, col: torch.Tensor) -> None:
        """Eyes, brows and lips on the skin of the face (canonical positions from Anny's eye joints / mouth)."""
        eye_y, eye_z = float(self.lm.eyes[:, 1].mean()), float(self.lm.eyes[:, 2].mean())
        face = (labels == SKIN_LABEL) & (v[:, 2] > eye_z - 0.04) & ((v[:, 1] - eye_y).abs() < 0.12)
        idx = face.nonzero()[:, 0]
        if idx.numel() == 0:
            return
        x, y, z = v[idx, 0], v[idx, 1], v[idx, 2]
        c = col[idx]
        o = self.outfit
        for e in self.lm.eyes:
            e = torch.as_tensor(e, dtype=torch.float32)
            front = z > e[2] - 0.01
            d = torch.sqrt((x - e[0]) ** 2 + ((y - e[1]) * 2.0) ** 2)
            c[front & (d < 0.0115)] = torch.tensor([0.9, 0.88, 0.85])
            c[front & (d < 0.0062)] = torch.tensor(o.iris)
            c[front & (d < 0.0028)] = torch.tensor([0.02, 0.02, 0.02])
            brow_y = e[1] + 0.022 - 8.0 * (x - e[0]) ** 2
            brow = (z > e[2] - 0.02) & ((y - brow_y).abs() < 0.0045) & ((x - e[0]).abs() < 0.02)
            c[brow] = torch.tensor(o.brow)
        if self.mouth is not None:
            m = self.mouth
            d = torch.sqrt((x / 0.022) ** 2 + ((y - m[1]) / 0.0075) ** 2)
            lips = (z > m[2] - 0.03) & (d < 1.0)
            c[lips] = c[lips] * torch.tensor([0.78, 0.48, 0.48]) + torch.tensor([0.12, 0.0, 0.0])
            c[lips & ((y - m[1]).abs() < 0.0012)] *= 0.45
        col[idx] = c


def _pattern(g: Garment, p: torch.Tensor) -> torch.Tensor:
    """(N, 3) float colours of garment ``g`` at canonical points ``p`` (N, 3)."""
    c1 = torch.tensor(g.color, dtype=torch.float32)
    c2 = torch.tensor(g.color2, dtype=torch.float32)
    s = g.pattern_scale
    if g.pattern == "stripes":
        t = (torch.sin(2 * math.pi * p[:, 1] / s) > 0).float()
    elif g.pattern == "checks":
        k = torch.floor(p[:, 0] / s) + torch.floor(p[:, 1] / s) + torch.floor(p[:, 2] / s)
        t = (k.remainder(2) > 0.5).float()
    elif g.pattern == "noise":
        t = (0.5 + 0.7 * fbm(p, 1.0 / s, g.seed + 5, octaves=3)).clamp(0, 1)
    else:
        t = torch.zeros(p.shape[0])
    col = c1 * (1 - t[:, None]) + c2 * t[:, None]
    return col * (1.0 + 0.05 * perlin(p * 150.0, g.seed + 9))[:, None]  # weave


def build_clothed_mesh(rest_verts: torch.Tensor, faces: torch.Tensor, lbs_weights: torch.Tensor,
                       rest_joints: torch.Tensor, outfit: Outfit, *, voxel: float = 0.005) -> ClothedMesh:
    """Extract, colour and skin the clothed surface of ``outfit`` on one canonical body.

    Args:
        rest_verts: (V, 3) canonical shaped body (``BodyOutput.rest_vertices[0]``); faces (F, 3);
        lbs_weights: (V, 55); rest_joints: (55, 3) (``BodyOutput.rest_joints[0]``).
        outfit: garments; voxel: marching-cubes spacing, metres.

    Returns:
        :class:`ClothedMesh` (watertight, outward-oriented).
    """
    field = ClothedField(rest_verts, faces, lbs_weights, rest_joints, outfit)
    lo, hi = field.bbox()
    v, f = extract_narrow_band(field, lo, hi, voxel)
    v = torch.from_numpy(v)
    labels, w = field.labels_and_weights(v)
    colors = field.colors(v, labels)
    return ClothedMesh(v, torch.from_numpy(f), colors, w.float(), labels.to(torch.int8))
