"""Procedural garments: random outfits and their coverage / offset over a canonical body.

A garment is an offset surface over a body region. Everything is defined in the CANONICAL space of
the shaped body (zero pose, SMPL-X T-pose: +Y up, facing +Z, arms along +-X, pelvis at the origin).
Region membership comes from the body's skinning weights summed over joint groups (arm, leg, torso,
neck, head; joint names in :mod:`foundation.body.skeleton`), cut by smooth planes placed relative to the
rest joints (sleeve length along the arm = along X, hems along Y).

Layers are stacked in ``Outfit.garments`` order (bottom first): a garment sits on top of whatever
lies below it, so the displacement of layer ``g`` at a body point is
``running = max(running, cov_g * (running + own_g))``.
"""

from __future__ import annotations

import colorsys
import json
from dataclasses import asdict, dataclass

import numpy as np
import torch

from foundation.body.skeleton import JOINT_INDEX, SMPLX_JOINT_NAMES

__all__ = [
    "Garment", "Outfit", "BodyLandmarks", "GARMENT_KINDS", "LOOSE_STYLES", "random_outfit", "random_loose_outfit",
    "joint_groups",
    "garment_coverage", "garment_thickness", "smoothstep",
]

GARMENT_KINDS = ("tight_shirt", "loose_shirt", "jacket", "trousers", "shorts", "skirt", "shoes", "hair")
TOPS = ("tight_shirt", "loose_shirt", "jacket")
BOTTOMS = ("trousers", "shorts", "skirt")

SKIN_TONES = (
    (0.96, 0.80, 0.69), (0.92, 0.74, 0.60), (0.85, 0.65, 0.51), (0.78, 0.57, 0.42),
    (0.66, 0.46, 0.32), (0.55, 0.37, 0.25), (0.43, 0.28, 0.19), (0.33, 0.21, 0.14),
)
HAIR_COLORS = (
    (0.06, 0.05, 0.05), (0.17, 0.11, 0.07), (0.30, 0.19, 0.11), (0.55, 0.40, 0.22),
    (0.80, 0.65, 0.40), (0.55, 0.22, 0.10), (0.62, 0.60, 0.58),
)
IRIS_COLORS = ((0.25, 0.15, 0.08), (0.12, 0.08, 0.05), (0.25, 0.40, 0.55), (0.30, 0.40, 0.25))
PATTERNS = ("plain", "stripes", "checks", "noise")


@dataclass(frozen=True)
class Garment:
    """One procedural garment.

    Attributes:
        kind: one of :data:`GARMENT_KINDS`.
        thickness: base offset from the body (or the layer below), metres.
        looseness: extra offset growing towards the garment's open ends (hem, sleeve, leg ends), metres.
        wrinkle_amp: amplitude of the displacement noise, metres; ``wrinkle_freq`` its frequency, 1/m.
        extent: tops: sleeve length as a fraction shoulder -> wrist (0 = sleeveless); trousers/shorts:
            leg length as a fraction hip -> ankle; skirt: hem height as a fraction hip -> ankle;
            shoes: height above the ankle (m); hair: length (0 short .. 1 to the shoulders).
        hem: tops: hem height relative to the hip joints (m, negative = lower); bottoms: waist
            height above the pelvis (m).
        flare: skirts: radius growth per metre downwards; trousers: extra offset at the leg end (m).
        neck_depth: tops: depth of the neckline in front (m); jacket: half-width of the open front (m);
            skirt: scale of the half-width of an open front (m, 0 = closed; the open long coat): 0.6x at
            the waist, 1.4x at the hem.
        color, color2: RGB in [0, 1]; ``pattern`` one of :data:`PATTERNS` with period ``pattern_scale`` (m).
        seed: noise seed.
    """

    kind: str
    thickness: float
    looseness: float = 0.0
    wrinkle_amp: float = 0.002
    wrinkle_freq: float = 12.0
    extent: float = 1.0
    hem: float = 0.0
    flare: float = 0.0
    neck_depth: float = 0.0
    color: tuple = (0.5, 0.5, 0.5)
    color2: tuple = (0.3, 0.3, 0.3)
    pattern: str = "plain"
    pattern_scale: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in GARMENT_KINDS:
            raise ValueError(f"Garment.kind must be one of {GARMENT_KINDS}, got {self.kind!r}")
        if self.pattern not in PATTERNS:
            raise ValueError(f"Garment.pattern must be one of {PATTERNS}, got {self.pattern!r}")


@dataclass(frozen=True)
class Outfit:
    """Garments bottom layer first, plus skin / face colours."""

    garments: tuple[Garment, ...] = ()
    skin: tuple = SKIN_TONES[2]
    iris: tuple = IRIS_COLORS[0]
    brow: tuple = HAIR_COLORS[1]

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(text: str) -> "Outfit":
        d = json.loads(text)
        gs = tuple(Garment(**{k: tuple(v) if isinstance(v, list) else v for k, v in g.items()}) for g in d["garments"])
        return Outfit(gs, tuple(d["skin"]), tuple(d["iris"]), tuple(d["brow"]))

    def describe(self) -> str:
        return ", ".join(g.kind for g in self.garments) or "naked"


# ------------------------------------------------------------------------------------- random outfits
def _color(rng: np.random.Generator, sat=(0.2, 0.85), val=(0.25, 0.9)) -> tuple:
    h = rng.uniform()
    s = rng.uniform(*sat)
    v = rng.uniform(*val)
    return tuple(float(c) for c in colorsys.hsv_to_rgb(h, s, v))


def _garment_colors(rng: np.random.Generator, skin: tuple) -> dict:
    """Colour, second colour and pattern, kept away from the skin tone (so clothes read as clothes)."""
    for _ in range(20):
        c = _color(rng)
        if np.abs(np.asarray(c) - np.asarray(skin)).sum() > 0.35:
            break
    pattern = str(rng.choice(PATTERNS, p=[0.45, 0.2, 0.15, 0.2]))
    c2 = _color(rng) if rng.uniform() < 0.5 else tuple(float(x) for x in np.clip(np.asarray(c) * rng.uniform(0.4, 0.7), 0, 1))
    return {"color": c, "color2": c2, "pattern": pattern, "pattern_scale": float(rng.uniform(0.02, 0.07))}


def _finish_outfit(rng: np.random.Generator, gs: list, skin: tuple, hair_c: tuple, seed) -> Outfit:
    """Hair (85 % of subjects) on top of the garments ``gs``, iris and brow colours: the outfit."""
    if rng.uniform() < 0.85:
        gs.append(Garment("hair", thickness=float(rng.uniform(0.006, 0.025)), wrinkle_amp=float(rng.uniform(0.001, 0.004)),
                          wrinkle_freq=float(rng.uniform(20, 40)), extent=float(rng.uniform(0.0, 1.0)),
                          color=hair_c, color2=tuple(float(c) for c in np.clip(np.asarray(hair_c) * 1.4 + 0.03, 0, 1)),
                          pattern="noise", pattern_scale=0.01, seed=seed()))
    return Outfit(tuple(gs), skin, IRIS_COLORS[int(rng.integers(len(IRIS_COLORS)))],
                  tuple(float(c) * 0.8 for c in hair_c))


def random_outfit(rng: np.random.Generator) -> Outfit:
    """A random plausible outfit (top + trousers / shorts / skirt, or a dress; maybe a jacket, shoes, hair)."""
    skin = SKIN_TONES[int(rng.integers(len(SKIN_TONES)))]
    hair_c = HAIR_COLORS[int(rng.integers(len(HAIR_COLORS)))]
    seed = lambda: int(rng.integers(1 << 30))  # noqa: E731
    style = rng.choice(["trousers", "shorts", "skirt", "dress"], p=[0.45, 0.2, 0.15, 0.2])
    gs: list[Garment] = []
    if rng.uniform() < 0.9:
        gs.append(Garment("shoes", thickness=float(rng.uniform(0.005, 0.01)), extent=float(rng.uniform(0.02, 0.09)),
                          wrinkle_amp=0.0005, color=_color(rng, (0.0, 0.5), (0.05, 0.8)), seed=seed()))
    top_colors = _garment_colors(rng, skin)
    if style in ("trousers", "shorts"):
        loose = float(rng.uniform(0.0, 0.025)) if style == "trousers" else float(rng.uniform(0.0, 0.02))
        extent = float(rng.uniform(0.9, 0.97)) if style == "trousers" else float(rng.uniform(0.25, 0.5))
        gs.append(Garment(style, thickness=float(rng.uniform(0.004, 0.009)), looseness=loose,
                          wrinkle_amp=float(rng.uniform(0.001, 0.004)), wrinkle_freq=float(rng.uniform(8, 20)),
                          extent=extent, hem=float(rng.uniform(0.04, 0.12)), flare=float(rng.uniform(0.0, 0.015)),
                          seed=seed(), **_garment_colors(rng, skin)))
    else:
        skirt_colors = top_colors if style == "dress" else _garment_colors(rng, skin)
        gs.append(Garment("skirt", thickness=float(rng.uniform(0.004, 0.008)),
                          wrinkle_amp=float(rng.uniform(0.002, 0.006)), wrinkle_freq=float(rng.uniform(6, 14)),
                          extent=float(rng.uniform(0.3, 0.75)), hem=float(rng.uniform(0.06, 0.12)),
                          flare=float(rng.uniform(0.05, 0.45)), seed=seed(), **skirt_colors))
    tight = rng.uniform() < 0.5
    sleeve = float(rng.choice([rng.uniform(0.0, 0.05), rng.uniform(0.25, 0.5), rng.uniform(0.9, 0.97)],
                              p=[0.2, 0.45, 0.35] if style != "dress" else [0.5, 0.4, 0.1]))
    gs.append(Garment(
        "tight_shirt" if tight else "loose_shirt",
        thickness=float(rng.uniform(0.003, 0.006)) if tight else float(rng.uniform(0.005, 0.01)),
        looseness=0.0 if tight else float(rng.uniform(0.01, 0.035)),
        wrinkle_amp=float(rng.uniform(0.0008, 0.002)) if tight else float(rng.uniform(0.002, 0.006)),
        wrinkle_freq=float(rng.uniform(10, 25)), extent=sleeve,
        # over a skirt the top ends just above the skirt's waist (tucked in); else anywhere around the hips
        hem=gs[-1].hem + float(rng.uniform(0.015, 0.03)) if gs[-1].kind == "skirt" else float(rng.uniform(-0.12, 0.02)),
        neck_depth=float(rng.uniform(0.0, 0.08)), seed=seed(), **top_colors))
    if rng.uniform() < 0.25:
        gs.append(Garment("jacket", thickness=float(rng.uniform(0.01, 0.018)), looseness=float(rng.uniform(0.005, 0.02)),
                          wrinkle_amp=float(rng.uniform(0.002, 0.005)), wrinkle_freq=float(rng.uniform(6, 14)),
                          extent=float(rng.uniform(0.9, 0.97)), hem=float(rng.uniform(-0.15, -0.05)),
                          neck_depth=float(rng.uniform(0.0, 0.06)), seed=seed(), **_garment_colors(rng, skin)))
    return _finish_outfit(rng, gs, skin, hair_c, seed)


#: Loose styles of :func:`random_loose_outfit` (garments 15-40 cm from the body at their ends).
LOOSE_STYLES = ("long_skirt", "dress", "closed_coat", "open_coat", "wide_trousers")


def random_loose_outfit(rng: np.random.Generator, style: str | None = None) -> Outfit:
    """A random outfit with a loose garment (one of :data:`LOOSE_STYLES`, random if None).

    * long_skirt / dress: a flared skirt to the calves or ankles (hem 15-40 cm out from the legs);
    * closed_coat / open_coat: a long coat: a jacket with long sleeves over a flared hull from the waist
      to the knees or below, in one colour; the open one has a gap in front showing the legs;
    * wide_trousers: trousers whose legs widen by 7-13 cm towards the ankles.
    """
    if style is None:
        style = str(rng.choice(LOOSE_STYLES))
    if style not in LOOSE_STYLES:
        raise ValueError(f"random_loose_outfit: style must be one of {LOOSE_STYLES}, got {style!r}")
    skin = SKIN_TONES[int(rng.integers(len(SKIN_TONES)))]
    hair_c = HAIR_COLORS[int(rng.integers(len(HAIR_COLORS)))]
    seed = lambda: int(rng.integers(1 << 30))  # noqa: E731
    gs: list[Garment] = [Garment("shoes", thickness=float(rng.uniform(0.005, 0.01)), extent=float(rng.uniform(0.02, 0.09)),
                                 wrinkle_amp=0.0005, color=_color(rng, (0.0, 0.5), (0.05, 0.8)), seed=seed())]
    top_colors = _garment_colors(rng, skin)
    if style in ("closed_coat", "open_coat", "wide_trousers"):
        wide = style == "wide_trousers"
        gs.append(Garment("trousers", thickness=float(rng.uniform(0.004, 0.008)),
                          looseness=float(rng.uniform(0.02, 0.04)) if wide else float(rng.uniform(0.0, 0.015)),
                          wrinkle_amp=float(rng.uniform(0.002, 0.005)), wrinkle_freq=float(rng.uniform(6, 14)),
                          extent=float(rng.uniform(0.93, 0.98)), hem=float(rng.uniform(0.04, 0.1)),
                          flare=float(rng.uniform(0.05, 0.09)) if wide else 0.0, seed=seed(),
                          **_garment_colors(rng, skin)))
    if style in ("long_skirt", "dress"):
        skirt_colors = top_colors if style == "dress" else _garment_colors(rng, skin)
        gs.append(Garment("skirt", thickness=float(rng.uniform(0.004, 0.008)),
                          wrinkle_amp=float(rng.uniform(0.003, 0.008)), wrinkle_freq=float(rng.uniform(5, 10)),
                          extent=float(rng.uniform(0.8, 1.0)), hem=float(rng.uniform(0.06, 0.12)),
                          flare=float(rng.uniform(0.25, 0.5)), seed=seed(), **skirt_colors))
    coat = style in ("closed_coat", "open_coat")
    coat_colors = _garment_colors(rng, skin)
    if coat:  # the coat's skirt: below the waist, in the coat's colour, over the trousers
        gs.append(Garment("skirt", thickness=float(rng.uniform(0.008, 0.014)),
                          wrinkle_amp=float(rng.uniform(0.002, 0.006)), wrinkle_freq=float(rng.uniform(5, 10)),
                          extent=float(rng.uniform(0.5, 0.85)), hem=float(rng.uniform(0.0, 0.05)),
                          flare=float(rng.uniform(0.15, 0.35)),
                          neck_depth=float(rng.uniform(0.05, 0.1)) if style == "open_coat" else 0.0,
                          seed=seed(), **coat_colors))
    skirt_below = gs[-1].kind == "skirt" and not coat
    gs.append(Garment(
        "loose_shirt" if rng.uniform() < 0.5 else "tight_shirt", thickness=float(rng.uniform(0.004, 0.008)),
        looseness=float(rng.uniform(0.005, 0.03)), wrinkle_amp=float(rng.uniform(0.001, 0.004)),
        wrinkle_freq=float(rng.uniform(10, 25)), extent=float(rng.uniform(0.25, 0.97)),
        hem=gs[-1].hem + float(rng.uniform(0.015, 0.03)) if skirt_below else float(rng.uniform(-0.1, 0.0)),
        neck_depth=float(rng.uniform(0.0, 0.06)), seed=seed(), **top_colors))
    if coat:
        gs.append(Garment("jacket", thickness=float(rng.uniform(0.012, 0.02)), looseness=float(rng.uniform(0.01, 0.03)),
                          wrinkle_amp=float(rng.uniform(0.002, 0.005)), wrinkle_freq=float(rng.uniform(6, 14)),
                          extent=float(rng.uniform(0.9, 0.98)), hem=float(rng.uniform(-0.16, -0.1)),
                          neck_depth=float(rng.uniform(0.03, 0.06)) if style == "open_coat" else 0.0,
                          seed=seed(), **coat_colors))
    return _finish_outfit(rng, gs, skin, hair_c, seed)


# ------------------------------------------------------------------------------------- body regions
def joint_groups(lbs_weights: torch.Tensor) -> dict[str, torch.Tensor]:
    """Soft body-part membership (V,) per group from (V, 55) skinning weights; groups sum to 1."""
    groups = {
        "torso": ["pelvis", "spine1", "spine2", "spine3", "left_collar", "right_collar"],
        "neck": ["neck"],
        "head": ["head", "jaw", "left_eye", "right_eye"],
        "arm_l": ["left_shoulder", "left_elbow"], "arm_r": ["right_shoulder", "right_elbow"],
        "hand_l": ["left_wrist"] + [n for n in SMPLX_JOINT_NAMES if n.startswith("left_") and n[-1].isdigit()],
        "hand_r": ["right_wrist"] + [n for n in SMPLX_JOINT_NAMES if n.startswith("right_") and n[-1].isdigit()],
        "leg_l": ["left_hip", "left_knee"], "leg_r": ["right_hip", "right_knee"],
        "foot_l": ["left_ankle", "left_foot"], "foot_r": ["right_ankle", "right_foot"],
    }
    return {g: lbs_weights[:, [JOINT_INDEX[n] for n in names]].sum(1) for g, names in groups.items()}


@dataclass(frozen=True)
class BodyLandmarks:
    """Canonical landmark heights / widths (metres) of one shaped body, from its rest joints."""

    neck: np.ndarray
    head: np.ndarray
    eyes: np.ndarray  # (2, 3) left, right
    shoulder_x: float
    wrist_x: float
    hip_y: float
    ankle_y: float
    pelvis_y: float
    chest_y: float
    sole_y: float

    @staticmethod
    def from_body(rest_verts: torch.Tensor, rest_joints: torch.Tensor) -> "BodyLandmarks":
        """rest_verts (V, 3), rest_joints (55, 3): one canonical body."""
        J = rest_joints.detach().cpu().numpy()
        v = rest_verts.detach().cpu().numpy()
        j = lambda n: J[JOINT_INDEX[n]]  # noqa: E731
        head = j("head")
        return BodyLandmarks(
            neck=j("neck"), head=head, eyes=np.stack([j("left_eye"), j("right_eye")]),
            shoulder_x=float(0.5 * (j("left_shoulder")[0] - j("right_shoulder")[0])),
            wrist_x=float(0.5 * (j("left_wrist")[0] - j("right_wrist")[0])),
            hip_y=float(0.5 * (j("left_hip")[1] + j("right_hip")[1])),
            ankle_y=float(0.5 * (j("left_ankle")[1] + j("right_ankle")[1])),
            pelvis_y=float(j("pelvis")[1]), chest_y=float(j("spine3")[1]), sole_y=float(v[:, 1].min()),
        )


def smoothstep(a: float, b: float, t: torch.Tensor) -> torch.Tensor:
    """0 for t <= a, 1 for t >= b (a < b; a > b reverses), cubic in between."""
    s = ((t - a) / (b - a)).clamp(0.0, 1.0)
    return s * s * (3.0 - 2.0 * s)


def garment_coverage(g: Garment, verts: torch.Tensor, groups: dict[str, torch.Tensor], lm: BodyLandmarks
                     ) -> torch.Tensor:
    """(V,) coverage in [0, 1] of garment ``g`` over canonical body vertices ``verts`` (V, 3).

    Skirts return only their waistband here; the hull below is :class:`synthetic.clothing.SkirtHull`.
    """
    x, y, z = verts[:, 0], verts[:, 1], verts[:, 2]
    ax = x.abs()
    arm = groups["arm_l"] + groups["arm_r"]
    leg = groups["leg_l"] + groups["leg_r"]
    foot = groups["foot_l"] + groups["foot_r"]
    torso, neck, head = groups["torso"], groups["neck"], groups["head"]
    w = 0.008
    if g.kind in TOPS:
        sleeve_end = lm.shoulder_x - 0.03 + g.extent * (lm.wrist_x - 0.02 - lm.shoulder_x + 0.03)
        on_arm = 1.0 - smoothstep(sleeve_end - w, sleeve_end + w, ax)
        hem_y = lm.hip_y + g.hem
        above_hem = smoothstep(hem_y - w, hem_y + w, y)
        front = smoothstep(lm.neck[2] - 0.02, lm.neck[2] + 0.06, z)
        collar_y = lm.neck[1] - 0.035 - g.neck_depth * front
        below_collar = 1.0 - smoothstep(collar_y - w, collar_y + w, y)
        body = above_hem * below_collar
        cov = arm * on_arm + (torso + neck + leg) * body
        if g.kind == "jacket" and g.neck_depth > 0:
            opening = smoothstep(g.neck_depth + w, g.neck_depth - w, ax) * smoothstep(lm.neck[2] - 0.03, lm.neck[2] + 0.03, z)
            cov = cov * (1.0 - opening * (1.0 - smoothstep(collar_y, collar_y + 0.05, y)))
        return cov.clamp(0, 1)
    if g.kind in BOTTOMS:
        waist_y = lm.pelvis_y + g.hem
        below_waist = 1.0 - smoothstep(waist_y - w, waist_y + w, y)
        if g.kind == "skirt":
            end_y = lm.hip_y - 0.12  # waistband only
        else:
            end_y = lm.hip_y + g.extent * (lm.ankle_y - lm.hip_y)
        above_end = smoothstep(end_y - w, end_y + w, y)
        return ((torso + leg + foot) * below_waist * above_end).clamp(0, 1)
    if g.kind == "shoes":
        top = lm.ankle_y + g.extent
        return ((foot + leg) * (1.0 - smoothstep(top - w, top + w, y))).clamp(0, 1)
    if g.kind == "hair":
        eye_y = float(lm.eyes[:, 1].mean())
        eye_z = float(lm.eyes[:, 2].mean())
        brow_y = eye_y + 0.035
        face = smoothstep(eye_z - 0.05, eye_z - 0.02, z)  # the face side of the head
        scalp = smoothstep(brow_y + 0.005, brow_y + 0.025, y)
        low = eye_y - 0.04 - 0.12 * g.extent  # how far the hair comes down at the back and sides
        back = (1.0 - face) * smoothstep(low - w, low + w, y)
        region = torch.maximum(scalp, back)
        return ((head + neck * (g.extent > 0.5)) * region).clamp(0, 1)
    raise ValueError(f"garment_coverage: unknown garment kind {g.kind!r}")


def garment_thickness(g: Garment, verts: torch.Tensor, lm: BodyLandmarks) -> torch.Tensor:
    """(V,) own offset (thickness + looseness profile) of garment ``g`` at canonical vertices, metres."""
    x, y = verts[:, 0], verts[:, 1]
    t = torch.full_like(y, g.thickness)
    if g.kind in TOPS:
        hem_y = lm.hip_y + g.hem
        down = smoothstep(lm.chest_y, hem_y, y)
        sleeve_end = lm.shoulder_x + g.extent * (lm.wrist_x - lm.shoulder_x)
        out = smoothstep(lm.shoulder_x, max(sleeve_end, lm.shoulder_x + 0.05), x.abs())
        on_arm = (x.abs() > lm.shoulder_x).float()
        prof = (1 - on_arm) * (0.35 + 0.65 * down) + on_arm * (0.3 + 0.7 * out)
        return t + g.looseness * prof
    if g.kind in ("trousers", "shorts"):
        end_y = lm.hip_y + g.extent * (lm.ankle_y - lm.hip_y)
        down = smoothstep(lm.hip_y, end_y, y)
        return t + g.looseness * (0.4 + 0.6 * down) + g.flare * down**2
    if g.kind == "shoes":
        sole = smoothstep(lm.sole_y + 0.03, lm.sole_y + 0.005, y)
        return t + 0.012 * sole
    if g.kind == "hair":
        top = smoothstep(lm.head[1], lm.head[1] + 0.1, y)
        return t * (0.6 + 0.4 * top) + 0.003
    return t

