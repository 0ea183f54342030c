"""A strip of evenly spaced frames of a video, for the README: ``python tools/picture_strip.py VIDEO OUT.png``.

    python tools/picture_strip.py outputs/demo/animation/animation.mp4 docs/images/motion_walk.png --frames 6
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def strip(video: str | Path, frames: int = 6, height: int = 192, gap: int = 4) -> np.ndarray:
    """(height, N * (w + gap) - gap, 3) uint8: ``frames`` evenly spaced frames side by side, white gaps."""
    import cv2

    from foundation.io.video import read_video

    images = read_video(video).images
    idx = np.linspace(0, len(images) - 1, min(frames, len(images))).round().astype(int)
    tiles = []
    for i in idx:
        im = images[i]
        w = int(round(im.shape[1] * height / im.shape[0]))
        tiles.append(cv2.resize(im, (w, height), interpolation=cv2.INTER_AREA))
        tiles.append(np.full((height, gap, 3), 255, np.uint8))
    return np.concatenate(tiles[:-1], 1)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video")
    ap.add_argument("out")
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--height", type=int, default=192)
    args = ap.parse_args(argv)
    import imageio.v3 as iio

    iio.imwrite(args.out, strip(args.video, args.frames, args.height))
    print(args.out)


if __name__ == "__main__":
    main()
