"""Person detection on video frames: 2D body/hand/face keypoints, a person mask, crop boxes.

Backend: mediapipe 0.10.14, legacy ``mp.solutions`` API, with the models shipped in the
wheel only: ``Holistic(model_complexity=1)`` (default) or ``Pose(model_complexity=1)``,
both with ``enable_segmentation=True``, plus ``SelfieSegmentation`` as a mask fallback.
Model complexities 0 and 2 try to download weights and fail offline: never used.

Conventions:

* Pixel coordinates: ``x`` right, ``y`` down, in pixels of the input frames, continuous
  (``x = u_normalised * W``; the centre of pixel ``(i, j)`` is ``(j + 0.5, i + 0.5)``).
* "left"/"right" are the PERSON's left/right (mediapipe's convention for pose and holistic
  hands; checked in ``tests/tracking/test_detect.py`` on a render with the left arm raised).
  A person facing the camera has their left side on the image's right.
* Keypoint arrays are ``(..., 3)``: ``x, y, confidence``. Confidence is the mediapipe
  visibility for body landmarks, 1 for detected hand/face landmarks, 0 for missing ones
  (missing keypoints also have ``x = y = 0``).

Several people: mediapipe's legacy graphs detect and then track ONE person (the first
found, re-detected when tracking is lost), so keypoints are always of one person. The
segmentation mask may also cover others (it is computed on that person's region of
interest); we keep only the largest connected component of the thresholded mask that
overlaps that person's landmarks (disks around visible landmarks), which drops detached
people and blobs. A person split in two by an occluder keeps only the larger part.

Face keypoints: the 468-point face mesh is reduced to :data:`FACE_KEYPOINT_NAMES`
(15 points: nose tip, chin, forehead, eye corners, brows, mouth corners, lips, cheeks),
enough to orient the head. Only filled with ``use_holistic=True`` (plain Pose has no mesh).
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, fields
from pathlib import Path

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d
from tqdm.auto import tqdm

from foundation.io.atomic import atomic_save_npz
from foundation.io.frames import FrameSeq, FrameStore, FrameWriter

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- landmark tables
MP_POSE_NAMES = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
    "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel",
    "right_heel", "left_foot_index", "right_foot_index",
)  # fmt: skip
MP_HAND_NAMES = (
    "wrist", "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip", "index_mcp", "index_pip",
    "index_dip", "index_tip", "middle_mcp", "middle_pip", "middle_dip", "middle_tip",
    "ring_mcp", "ring_pip", "ring_dip", "ring_tip", "pinky_mcp", "pinky_pip", "pinky_dip",
    "pinky_tip",
)  # fmt: skip

#: Face-mesh indices kept in ``Detections.face_kp`` (person's left/right).
FACE_KEYPOINTS = (
    ("nose_tip", 1), ("chin", 152), ("forehead", 10),
    ("right_eye_outer", 33), ("right_eye_inner", 133), ("left_eye_inner", 362), ("left_eye_outer", 263),
    ("right_brow", 105), ("left_brow", 334), ("mouth_right", 61), ("mouth_left", 291),
    ("upper_lip", 13), ("lower_lip", 14), ("right_cheek", 234), ("left_cheek", 454),
)  # fmt: skip
FACE_KEYPOINT_NAMES = tuple(n for n, _ in FACE_KEYPOINTS)
_FACE_IDX = np.array([i for _, i in FACE_KEYPOINTS])

#: (mediapipe pose landmark, SMPL-X joint) pairs of the same anatomical point.
#: Approximate by nature: SMPL-X hips are inside the pelvis (mediapipe's are a little
#: lower/outer, weight them down), SMPL-X ``*_foot`` (10/11) is the ball of the foot while
#: mediapipe ``*_foot_index`` is the toe tip. Eyes map to the SMPL-X eye joints.
MP_POSE_TO_SMPLX: list[tuple[int, int]] = [
    (23, 1), (24, 2),    # hips
    (25, 4), (26, 5),    # knees
    (27, 7), (28, 8),    # ankles
    (31, 10), (32, 11),  # foot index -> foot
    (11, 16), (12, 17),  # shoulders
    (13, 18), (14, 19),  # elbows
    (15, 20), (16, 21),  # wrists
    (2, 23), (5, 24),    # eyes
]  # fmt: skip

# mediapipe hand landmark -> SMPL-X joint offset inside a hand block (0..14, SMPL-X order
# index, middle, pinky, ring, thumb; joints 1/2/3 = MCP/PIP/DIP, thumb CMC/MCP/IP).
_HAND_TO_BLOCK = [
    (5, 0), (6, 1), (7, 2),     # index
    (9, 3), (10, 4), (11, 5),   # middle
    (17, 6), (18, 7), (19, 8),  # pinky
    (13, 9), (14, 10), (15, 11),  # ring
    (1, 12), (2, 13), (3, 14),  # thumb
]  # fmt: skip
#: (mediapipe hand landmark, SMPL-X joint) for the person's left hand (wrist 20, fingers 25-39).
MP_HAND_TO_SMPLX_LEFT: list[tuple[int, int]] = [(0, 20)] + [(h, 25 + j) for h, j in _HAND_TO_BLOCK]
#: Same for the right hand (wrist 21, fingers 40-54).
MP_HAND_TO_SMPLX_RIGHT: list[tuple[int, int]] = [(0, 21)] + [(h, 40 + j) for h, j in _HAND_TO_BLOCK]
#: Fingertips (no SMPL-X skeleton joint): mediapipe hand landmark -> index in the
#: ``smplx`` package's extended joint output (vertex-selected tips, 66..70 left, 71..75 right
#: in thumb, index, middle, ring, pinky order) for the left hand; add 5 for the right.
MP_HAND_TIPS_TO_SMPLX_EXTRA_LEFT: list[tuple[int, int]] = [(4, 66), (8, 67), (12, 68), (16, 69), (20, 70)]

NUM_SMPLX_JOINTS = 55


class NoPersonError(ValueError):
    """Too few frames of a clip contain a person. ``.detections`` holds what was found."""

    def __init__(self, message: str, detections: "Detections | None" = None):
        super().__init__(message)
        self.detections = detections


@dataclass(frozen=True)
class DetectConfig:
    """Person detection options.

    Attributes:
        min_detection_confidence: mediapipe person detection threshold in [0, 1].
        min_tracking_confidence: mediapipe landmark tracking threshold in [0, 1] (video mode).
        mask_threshold: soft mask value above which a pixel is the person (connected
            components, bounding boxes).
        use_holistic: Holistic (body + hands + face) if True, else Pose (body only; about twice as fast:
            the fitter then orients the hands from the pose graph's hand points). False by default.
        static_image_mode: detect afresh on every frame (unrelated images) instead of
            tracking (video). False for videos.
        selfie_fallback: use SelfieSegmentation for the mask of frames where the pose graph
            finds nobody (those frames stay invalid).
        landmark_visibility: body landmarks with visibility below this are ignored for
            boxes and mask selection.
        crop_scale: crop side = this * longest side of the person box.
        crop_size: side in pixels of crops made by :func:`crop_frames`.
        crop_smooth_sigma: Gaussian smoothing of crop centre and size over time, in frames
            (0 disables).
        min_valid_fraction: :class:`NoPersonError` if fewer frames than this have a person.
        max_side: frames whose longer side exceeds this are downscaled (area filter) before
            mediapipe sees them (its networks run at 256 px anyway; decoding the large frame and
            computing the mask at full size is what costs); landmarks and masks are returned
            at the input resolution. None: never.
        scene_cut: a frame whose 32 x 32 grey thumbnail differs from the previous frame's by more
            than this (mean absolute difference, 0-1) starts a new shot: the tracker is reset, so a
            person seen before the cut is not carried into a shot without them (consecutive frames
            of real clips differ by < 0.07 even 20 frames apart; a cut by ~0.35). 0: never reset.
    """

    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    mask_threshold: float = 0.5
    use_holistic: bool = False
    static_image_mode: bool = False
    selfie_fallback: bool = True
    landmark_visibility: float = 0.5
    crop_scale: float = 1.2
    crop_size: int = 512
    crop_smooth_sigma: float = 2.0
    min_valid_fraction: float = 0.5
    max_side: int | None = 512
    scene_cut: float = 0.15

    def __post_init__(self):
        for name in ("min_detection_confidence", "min_tracking_confidence", "mask_threshold",
                     "landmark_visibility", "min_valid_fraction"):  # fmt: skip
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"DetectConfig.{name} must be in [0, 1], got {v}")
        if not self.crop_scale > 0:
            raise ValueError(f"DetectConfig.crop_scale must be > 0, got {self.crop_scale}")
        if self.crop_size < 1:
            raise ValueError(f"DetectConfig.crop_size must be >= 1, got {self.crop_size}")
        if self.max_side is not None and self.max_side < 64:
            raise ValueError(f"DetectConfig.max_side must be >= 64 or None, got {self.max_side}")
        if self.crop_smooth_sigma < 0:
            raise ValueError(f"DetectConfig.crop_smooth_sigma must be >= 0, got {self.crop_smooth_sigma}")


@dataclass(frozen=True)
class Detections:
    """Per-frame person detections of one clip (T frames of H x W pixels).

    Attributes:
        body_kp: (T, 33, 3) float32 mediapipe pose landmarks (:data:`MP_POSE_NAMES`):
            pixel x, y, visibility.
        lhand_kp, rhand_kp: (T, 21, 3) float32 the person's left/right hand
            (:data:`MP_HAND_NAMES`): pixel x, y, confidence (1 found, 0 missing).
        face_kp: (T, K, 3) float32 face keypoints (:data:`FACE_KEYPOINT_NAMES`, K = 15):
            pixel x, y, confidence (1 found, 0 missing; always 0 without holistic).
        masks: (T, H, W) float32 in [0, 1], soft person segmentation (an array, or a frame store on disk:
            :mod:`foundation.io.frames`).
        bboxes: (T, 4) float32 x0, y0, x1, y1 pixels: box of mask and visible landmarks,
            clipped to the image; zeros where nothing was found.
        valid: (T,) bool, a person was found in the frame.
        crops: (T, 4) float32 x0, y0, x1, y1 square crop boxes (may extend beyond the image),
            centred on the person box, side ``crop_scale * max(w, h)``, smoothed over time,
            interpolated over invalid frames.
        source: where the frames came from (for messages), may be empty.
    """

    body_kp: np.ndarray
    lhand_kp: np.ndarray
    rhand_kp: np.ndarray
    face_kp: np.ndarray
    masks: FrameSeq
    bboxes: np.ndarray
    valid: np.ndarray
    crops: np.ndarray
    source: str = ""

    def __len__(self) -> int:
        return int(self.valid.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return int(self.masks.shape[1]), int(self.masks.shape[2])

    def smplx_keypoints(self) -> np.ndarray:
        """Keypoints in SMPL-X joint order for a 2D fitter.

        Returns:
            (T, 55, 3) float32 pixel x, y, confidence; confidence 0 for joints with no
            mediapipe counterpart (pelvis, spine, neck, collars, head, jaw) and missing ones.
            Wrists come from the hand landmarks where a hand was found, else from the pose.
        """
        out = np.zeros((len(self), NUM_SMPLX_JOINTS, 3), np.float32)
        for mp_i, sx_i in MP_POSE_TO_SMPLX:
            out[:, sx_i] = self.body_kp[:, mp_i]
        for hand, table in ((self.lhand_kp, MP_HAND_TO_SMPLX_LEFT), (self.rhand_kp, MP_HAND_TO_SMPLX_RIGHT)):
            found = hand[:, 0, 2] > 0
            for mp_i, sx_i in table:
                out[found, sx_i] = hand[found, mp_i]
        return out

    def save(self, path: str | Path) -> None:
        """Write to an ``.npz`` atomically (masks quantised to uint8, 1/255 steps; masks in a frame store
        stay there and the file names the store, relative to its own folder)."""
        path = Path(path)
        arrays = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("masks", "source")}
        if isinstance(self.masks, FrameStore):
            masks = {"masks_dir": np.array(os.path.relpath(self.masks.dir, path.parent))}
        else:
            masks = {"masks_u8": np.round(np.asarray(self.masks) * 255).astype(np.uint8)}
        atomic_save_npz(path, **arrays, **masks, source=np.array(self.source))

    @classmethod
    def load(cls, path: str | Path) -> "Detections":
        """Read what :meth:`save` wrote."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no detections file; run tracking.detect.detect_person first.")
        try:
            with np.load(path, allow_pickle=False) as z:
                kw = {f.name: z[f.name] for f in fields(cls) if f.name not in ("masks", "source")}
                if "masks_dir" in z.files:
                    kw["masks"] = FrameStore(path.parent / str(z["masks_dir"]))
                else:
                    kw["masks"] = z["masks_u8"].astype(np.float32) / 255.0
                kw["source"] = str(z["source"])
        except (KeyError, ValueError, OSError) as e:
            raise ValueError(f"{path}: not a valid detections file ({e}); delete it and re-run detection.") from e
        return cls(**kw)


# ----------------------------------------------------------------------------- detection
def detect_person(frames, cfg: DetectConfig | None = None, source: str | Path | None = None,
                  masks_out: FrameWriter | None = None, total: int | None = None) -> Detections:
    """Detect one person's keypoints and mask in every frame, one frame in memory at a time.

    Args:
        frames: (T, H, W, 3) uint8 RGB images: an array, a :class:`foundation.io.video.Frames` (its
            ``path`` then names the clip in messages), a frame store, or any iterable of (H, W, 3)
            uint8 frames (a stream: consumed once, never held whole).
        cfg: options; defaults to :class:`DetectConfig()`.
        source: name of the clip for messages (overrides ``frames.path``).
        masks_out: write the masks into this store (closed here; ``Detections.masks`` is then the
            :class:`~foundation.io.frames.FrameStore`) instead of a (T, H, W) float32 array in memory.
        total: number of frames, for the progress bar of a stream.

    Returns:
        :class:`Detections` with T frames.

    Raises:
        ValueError: a frame is not (H, W, 3) uint8, the frames change size, or there are none.
        NoPersonError: fewer than ``cfg.min_valid_fraction`` of the frames have a person.
    """
    cfg = cfg or DetectConfig()
    if hasattr(frames, "images"):
        source = source if source is not None else getattr(frames, "path", "")
        frames = frames.images
    source = str(source or "<frames>")
    if isinstance(frames, np.ndarray) and (frames.ndim != 4 or frames.shape[0] == 0):
        raise ValueError(f"detect_person({source}): frames must be a non-empty (T, H, W, 3) uint8 RGB array, "
                         f"got shape {frames.shape} dtype {frames.dtype}")
    if total is None and hasattr(frames, "__len__"):
        total = len(frames)
    import mediapipe as mp  # slow import (~2 s), only when detecting

    body, lhand, rhand, face, bboxes, valid, masks = [], [], [], [], [], [], []
    common = dict(
        static_image_mode=cfg.static_image_mode,
        model_complexity=1,  # the only complexity whose model ships in the wheel
        enable_segmentation=True,
        min_detection_confidence=cfg.min_detection_confidence,
        min_tracking_confidence=cfg.min_tracking_confidence,
    )

    def new_graph():
        if cfg.use_holistic:
            return mp.solutions.holistic.Holistic(**common, refine_face_landmarks=False)
        return mp.solutions.pose.Pose(**common)

    graph = new_graph()
    tracking = cfg.scene_cut > 0 and not cfg.static_image_mode
    cuts: list[int] = []
    prev_thumb = None
    selfie = None
    size = None
    with warnings.catch_warnings():
        # mediapipe 0.10.14 calls a protobuf API deprecated in protobuf 4.25: harmless, once per graph
        warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype", category=UserWarning)
        try:
            for t, frame in enumerate(tqdm(frames, total=total, desc=f"detect {Path(source).name}", unit="frame",
                                           leave=False)):
                frame = np.asarray(frame)
                if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
                    raise ValueError(f"detect_person({source}): frames must be (H, W, 3) uint8 RGB, frame {t} is "
                                     f"{frame.shape} {frame.dtype}")
                if size is None:
                    size = frame.shape[:2]
                    H, W = size
                    scale = np.array([W, H], np.float32)  # landmarks are normalised: any input size maps back
                    small = None
                    if cfg.max_side is not None and max(H, W) > cfg.max_side:
                        s = cfg.max_side / max(H, W)
                        small = (max(1, round(W * s)), max(1, round(H * s)))
                elif frame.shape[:2] != size:
                    raise ValueError(f"detect_person({source}): frame {t} is {frame.shape[1]}x{frame.shape[0]}, "
                                     f"the first was {W}x{H}")
                if tracking:
                    thumb = _thumbnail(frame)
                    if prev_thumb is not None and _cut(prev_thumb, thumb, cfg.scene_cut):
                        cuts.append(t)
                        graph.close()
                        graph = new_graph()
                    prev_thumb = thumb
                image = np.ascontiguousarray(frame)
                if small is not None:
                    image = cv2.resize(image, small, interpolation=cv2.INTER_AREA)
                image.flags.writeable = False
                res = graph.process(image)
                kb = _landmarks(res.pose_landmarks, scale, visibility=True) if res.pose_landmarks is not None \
                    else np.zeros((33, 3), np.float32)
                kl, kr = np.zeros((21, 3), np.float32), np.zeros((21, 3), np.float32)
                kf = np.zeros((len(FACE_KEYPOINTS), 3), np.float32)
                if cfg.use_holistic:
                    if res.left_hand_landmarks is not None:
                        kl = _landmarks(res.left_hand_landmarks, scale)
                    if res.right_hand_landmarks is not None:
                        kr = _landmarks(res.right_hand_landmarks, scale)
                    if res.face_landmarks is not None:
                        kf = _landmarks(res.face_landmarks, scale)[_FACE_IDX]
                soft = res.segmentation_mask
                if soft is None and cfg.selfie_fallback:
                    if selfie is None:
                        selfie = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
                    soft = selfie.process(image).segmentation_mask
                pts = _visible_points(kb, kl, kr, kf, cfg.landmark_visibility, W, H)
                mask = np.zeros((H, W), np.float32)
                if soft is not None:
                    soft = np.asarray(soft, np.float32)
                    if small is not None:
                        soft = cv2.resize(soft, (W, H), interpolation=cv2.INTER_LINEAR)
                    mask = _select_component(soft, pts, cfg.mask_threshold)
                box = np.zeros(4, np.float32)
                if res.pose_landmarks is not None:
                    box = _bbox(mask > cfg.mask_threshold, pts, W, H)
                body.append(kb), lhand.append(kl), rhand.append(kr), face.append(kf), bboxes.append(box)
                valid.append(bool(box[2] > box[0] and box[3] > box[1]))
                if masks_out is not None:
                    masks_out.append(mask)
                else:
                    masks.append(mask)
        finally:
            graph.close()
            if selfie is not None:
                selfie.close()
    if size is None:
        raise ValueError(f"detect_person({source}): no frames")
    if cuts:
        log.info("%s: %d scene cut(s) (frames %s): the tracker restarts there", source, len(cuts), cuts)
    T = len(valid)
    bboxes_a, valid_a = np.stack(bboxes).astype(np.float32), np.asarray(valid, bool)
    crops = smooth_crops(bboxes_a, valid_a, cfg.crop_scale, cfg.crop_smooth_sigma, size)
    lhand_a, rhand_a = np.stack(lhand), np.stack(rhand)
    mask_seq = masks_out.close() if masks_out is not None else np.stack(masks)
    det = Detections(np.stack(body), lhand_a, rhand_a, np.stack(face), mask_seq, bboxes_a, valid_a, crops, source)
    frac = float(valid_a.mean())
    log.info(
        "%s: person in %d/%d frames (%.0f%%), left hand %.0f%%, right hand %.0f%%",
        source, valid_a.sum(), T, 100 * frac, 100 * (lhand_a[:, 0, 2] > 0).mean(), 100 * (rhand_a[:, 0, 2] > 0).mean(),
    )
    if frac < cfg.min_valid_fraction:
        raise NoPersonError(
            f"{source}: a person was found in only {valid_a.sum()}/{T} frames ({frac:.0%}), below "
            f"DetectConfig.min_valid_fraction={cfg.min_valid_fraction:.0%}. Use a clip where one person is "
            "fully visible and large enough, trim the clip (VideoConfig.start/max_frames), or lower "
            "min_valid_fraction / min_detection_confidence.",
            det,
        )
    return det


def _thumbnail(frame: np.ndarray) -> np.ndarray:
    """(32, 32) float32 grey thumbnail in [0, 1] (what scene cuts compare)."""
    grey = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _cut(prev: np.ndarray, thumb: np.ndarray, threshold: float) -> bool:
    return float(np.abs(thumb - prev).mean()) > threshold


def scene_cuts(frames, threshold: float) -> np.ndarray:
    """Indices t >= 1 of frames that start a new shot (the test :func:`detect_person` applies as it streams).

    Args:
        frames: (T, H, W, 3) uint8 RGB (array or any sequence of frames).  threshold: mean absolute
            difference (0-1) of consecutive 32 x 32 grey thumbnails above which frame t is a cut.
    Returns:
        (K,) int64 frame indices, increasing.
    """
    out, prev = [], None
    for t, f in enumerate(frames):
        thumb = _thumbnail(f)
        if prev is not None and _cut(prev, thumb, threshold):
            out.append(t)
        prev = thumb
    return np.asarray(out, np.int64)


def _landmarks(lms, scale: np.ndarray, visibility: bool = False) -> np.ndarray:
    """mediapipe NormalizedLandmarkList -> (N, 3) pixel x, y, confidence."""
    a = np.array([(p.x, p.y, p.visibility) for p in lms.landmark], np.float32)
    a[:, :2] *= scale
    if not visibility:  # hand/face landmarks carry no visibility: found = 1
        a[:, 2] = 1.0
    return a


def _visible_points(body, lhand, rhand, face, vis: float, W: int, H: int) -> np.ndarray:
    """(N, 2) pixel positions of confident landmarks inside the image."""
    pts = np.concatenate([body[body[:, 2] >= vis], lhand[lhand[:, 2] > 0], rhand[rhand[:, 2] > 0], face[face[:, 2] > 0]])
    pts = pts[:, :2]
    inside = (pts[:, 0] >= 0) & (pts[:, 0] < W) & (pts[:, 1] >= 0) & (pts[:, 1] < H)
    return pts[inside]


def _select_component(soft: np.ndarray, pts: np.ndarray, thr: float) -> np.ndarray:
    """Keep the largest connected component of ``soft > thr`` that overlaps the landmarks.

    Args:
        soft: (H, W) float32 soft mask in [0, 1].
        pts: (N, 2) pixel landmark positions; a disk of radius ~1% of the image diagonal
            around each counts as overlap. With no landmarks or no overlap, the largest component.

    Returns:
        (H, W) float32 soft mask, zero outside the kept component (slightly dilated to keep
        the soft edge).
    """
    soft = np.clip(soft, 0.0, 1.0)
    binary = (soft > thr).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if n <= 1:
        return np.zeros_like(soft)
    areas = stats[1:, cv2.CC_STAT_AREA]
    candidates = np.arange(1, n)
    if len(pts):
        H, W = soft.shape
        r = max(2, int(round(0.01 * np.hypot(H, W))))
        disk = np.zeros((H, W), np.uint8)
        for x, y in pts.astype(int):
            cv2.circle(disk, (int(x), int(y)), r, 1, -1)
        hits = np.bincount(labels[disk > 0], minlength=n)[1:]
        if hits.any():
            candidates = candidates[hits > 0]
    keep = candidates[np.argmax(areas[candidates - 1])]
    if n > 2:
        log.debug("mask: kept component %d of %d (area %d px)", keep, n - 1, areas[keep - 1])
    region = cv2.dilate((labels == keep).astype(np.uint8), np.ones((5, 5), np.uint8))
    return soft * region


def _bbox(binary: np.ndarray, pts: np.ndarray, W: int, H: int) -> np.ndarray:
    """(4,) x0, y0, x1, y1 box of a binary mask (H, W) and points (N, 2), clipped to the image."""
    xs, ys = [], []
    rows, cols = np.any(binary, 1), np.any(binary, 0)
    if rows.any():
        y = np.flatnonzero(rows)
        x = np.flatnonzero(cols)
        xs += [x[0], x[-1] + 1]
        ys += [y[0], y[-1] + 1]
    if len(pts):
        xs += [pts[:, 0].min(), pts[:, 0].max()]
        ys += [pts[:, 1].min(), pts[:, 1].max()]
    if not xs:
        return np.zeros(4, np.float32)
    return np.array(
        [max(0.0, min(xs)), max(0.0, min(ys)), min(float(W), max(xs)), min(float(H), max(ys))], np.float32
    )


def smooth_crops(
    bboxes: np.ndarray, valid: np.ndarray, scale: float, sigma: float, image_size: tuple[int, int]
) -> np.ndarray:
    """Square crop boxes around person boxes, smoothed over time.

    Args:
        bboxes: (T, 4) x0, y0, x1, y1 pixels.
        valid: (T,) bool; invalid frames are linearly interpolated from valid neighbours
            (held constant past the ends).
        scale: crop side = ``scale * max(w, h)``.
        sigma: Gaussian smoothing of centre and side over time, in frames (0: none).
        image_size: (H, W); with no valid frame the crop is the whole image's bounding square.

    Returns:
        (T, 4) float32 x0, y0, x1, y1 square boxes (may extend beyond the image).
    """
    T = len(bboxes)
    H, W = image_size
    if not np.any(valid):
        side = float(max(H, W))
        return np.tile(np.array([W / 2 - side / 2, H / 2 - side / 2, W / 2 + side / 2, H / 2 + side / 2], np.float32), (T, 1))
    b = bboxes.astype(np.float64)
    c = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, scale * np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])], 1)
    t_all = np.arange(T)
    t_ok = np.flatnonzero(valid)
    c = np.stack([np.interp(t_all, t_ok, c[t_ok, k]) for k in range(3)], 1)
    if sigma > 0 and T > 1:
        c = gaussian_filter1d(c, sigma, axis=0, mode="nearest")
    half = c[:, 2] / 2
    return np.stack([c[:, 0] - half, c[:, 1] - half, c[:, 0] + half, c[:, 1] + half], 1).astype(np.float32)


def crop_frames(images: np.ndarray, crops: np.ndarray, size: int, border_value: float = 0) -> np.ndarray:
    """Cut square crops out of frames and resize them.

    Args:
        images: (T, H, W) or (T, H, W, C) images (any dtype cv2 can warp: uint8, float32).
        crops: (T, 4) x0, y0, x1, y1 square boxes in pixels (e.g. ``Detections.crops``).
        size: output side in pixels (e.g. ``DetectConfig.crop_size``).
        border_value: fill for the parts of a crop outside the image.

    Returns:
        (T, size, size[, C]) crops, same dtype. Pixel ``(u, v)`` of crop ``t`` samples image
        point ``(x0 + u * s / size, y0 + v * s / size)`` with ``s = x1 - x0``.
    """
    if len(images) != len(crops):
        raise ValueError(f"crop_frames: {len(images)} images but {len(crops)} crop boxes")
    out = []
    for im, (x0, y0, x1, y1) in zip(images, crops):
        k = size / max(x1 - x0, 1e-6)
        A = np.array([[k, 0, -x0 * k], [0, k, -y0 * k]], np.float64)
        out.append(cv2.warpAffine(im, A, (size, size), flags=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=border_value))  # fmt: skip
    return np.stack(out, 0)


__all__ = [
    "DetectConfig", "Detections", "NoPersonError", "detect_person", "crop_frames", "smooth_crops", "scene_cuts",
    "MP_POSE_NAMES", "MP_HAND_NAMES", "FACE_KEYPOINT_NAMES", "MP_POSE_TO_SMPLX",
    "MP_HAND_TO_SMPLX_LEFT", "MP_HAND_TO_SMPLX_RIGHT", "MP_HAND_TIPS_TO_SMPLX_EXTRA_LEFT",
]  # fmt: skip
