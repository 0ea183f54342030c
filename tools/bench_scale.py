"""Tracking long 1080p clips in bounded memory: peak RSS and frames/s against clip length.

    python tools/bench_scale.py [--source CLIP] [--seconds 30 120 300] [--work DIR] [--pipeline]

Builds 1920 x 1080 clips of about the given lengths by looping ``--source`` (default: the real studio
clip in ``../shared/data/real/videos`` when present, else the synthetic demo clip scaled to 1080p), by
remuxing its packets (no re-encoding), then tracks each one with the default settings
(``TrackingConfig()``: working size 1024 px, detection at 512 px, overlay video at 512 px) in a child
process of its own, which reports its peak resident memory (``resource.getrusage``: the whole tracking
process, body model included) and the stage's per-step seconds.

``--pipeline`` then runs the whole default pipeline (``python -m avatar.run video=CLIP``) on the
longest clip and prints its wall time.

Prints a table, then one JSON line:
``{"clips": [{"seconds", "frames", "fps", "peak_rss_gb"}, ...]}`` (``fps``: frames per second of
read+detect+fit+overlay, the stage without its one-time set-up), plus ``"pipeline": {"clip_seconds",
"seconds"}`` with ``--pipeline``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
REAL = ROOT.parent / "shared" / "data" / "real" / "videos" / "studio_jumpingjacks_turn.mp4"


def make_source(work: Path) -> Path:
    """A 1080p source clip: the real studio clip if present, else the synthetic demo clip scaled up."""
    if REAL.exists():
        return REAL
    import cv2
    import numpy as np

    from foundation.io.video import VideoWriter, read_video
    from synthetic.video import make_synthetic_video

    src = work / "source_1080p.mp4"
    if not src.exists():
        make_synthetic_video(work / "synthetic", num_frames=60, seed=0)
        small = read_video(work / "synthetic" / "clip.mp4").images
        with VideoWriter(src, fps=30, crf=20) as out:
            for im in small:  # scale to 1080 rows, pad to 1920 columns
                h, w = im.shape[:2]
                big = cv2.resize(im, (round(w * 1080 / h), 1080), interpolation=cv2.INTER_CUBIC)
                pad = 1920 - big.shape[1]
                out.write(np.pad(big, ((0, 0), (pad // 2, pad - pad // 2), (0, 0)), mode="edge"))
    return src


def loop_clip(source: Path, seconds: float, out_path: Path) -> Path:
    """``source`` repeated until it lasts ``seconds`` (packets remuxed with shifted timestamps)."""
    import av

    if out_path.exists():
        return out_path
    with av.open(str(source)) as probe:
        st = probe.streams.video[0]
        dur = float(st.duration * st.time_base) if st.duration else float(st.frames) / float(st.average_rate)
    loops = max(1, round(seconds / dur))
    tmp = out_path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as out:
        ost = None
        for k in range(loops):
            with av.open(str(source)) as inp:
                ist = inp.streams.video[0]
                if ost is None:
                    ost = out.add_stream_from_template(ist) if hasattr(out, "add_stream_from_template") \
                        else out.add_stream(template=ist)
                shift = int(round(k * dur / ist.time_base))
                for pkt in inp.demux(ist):
                    if pkt.dts is None:
                        continue
                    pkt.pts += shift
                    pkt.dts += shift
                    pkt.stream = ost
                    out.mux(pkt)
    tmp.rename(out_path)
    return out_path


def child(video: str, run_dir: str) -> None:
    """Track ``video`` into ``run_dir`` with the default settings; print one JSON line about it."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from foundation.body.model import build_body_model
    from tracking.stage import TrackingConfig, run_tracking

    class Recorder:
        scalars: dict = {}

        def log_scalars(self, d, step=None):
            self.scalars.update(d)

        def log_image(self, *a, **k):
            pass

    body = build_body_model()
    rec = Recorder()
    t0 = time.perf_counter()
    tracks = run_tracking(video, TrackingConfig(), body, Path(run_dir), rec)
    wall = time.perf_counter() - t0
    steps = {k[len("tracking/seconds_"):]: v for k, v in rec.scalars.items() if k.startswith("tracking/seconds_")}
    disk = sum(p.stat().st_size for p in Path(run_dir).rglob("*") if p.is_file())
    print(json.dumps({"frames": len(tracks), "wall": wall, "steps": steps, "disk_gb": disk / 2 ** 30,
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, default=None, help="1080p clip to loop (default: see above)")
    ap.add_argument("--seconds", type=float, nargs="+", default=[30, 120, 300])
    ap.add_argument("--work", type=Path, default=None, help="where clips and runs go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the tracking run directories")
    ap.add_argument("--pipeline", action="store_true", help="also run the whole pipeline on the longest clip")
    ap.add_argument("--child", nargs=2, metavar=("VIDEO", "RUN_DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_scale_"))
    work.mkdir(parents=True, exist_ok=True)
    source = args.source or make_source(work)
    print(f"source {source}; work {work}; load {os.getloadavg()[0]:.2f}", flush=True)
    rows, clips = [], {}
    for sec in args.seconds:
        clip = loop_clip(source, sec, work / f"clip_{int(sec)}s.mp4")
        clips[sec] = clip
        run = work / f"track_{int(sec)}s"
        if run.exists():
            import shutil

            shutil.rmtree(run)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--child", str(clip), str(run)], capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-4000:])
            raise SystemExit(f"tracking {clip} failed (exit {proc.returncode})")
        rec = json.loads(proc.stdout.strip().splitlines()[-1])
        st = rec["steps"]
        work_s = st.get("read_detect", 0) + st.get("fit", 0) + st.get("overlay", 0)
        rows.append({"seconds": round(sec, 1), "frames": rec["frames"], "fps": round(rec["frames"] / work_s, 1),
                     "peak_rss_gb": round(rec["peak_rss_gb"], 2), "_wall": time.perf_counter() - t0,
                     "_disk": rec["disk_gb"], "_steps": st})
        if not args.keep:
            import shutil

            shutil.rmtree(run, ignore_errors=True)
        r = rows[-1]
        print(f"{sec:6.0f} s  {r['frames']:6d} frames  {r['fps']:5.1f} frames/s  peak RSS {r['peak_rss_gb']:.2f} GB  "
              f"disk {r['_disk']:.2f} GB  process {r['_wall']:.0f} s  "
              f"({', '.join(f'{k} {v:.1f}s' for k, v in st.items())})", flush=True)
    out = {"clips": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]}
    if args.pipeline:
        longest = max(clips)
        run = work / f"pipeline_{int(longest)}s"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "avatar.run", f"video={clips[longest]}", f"run_dir={run}"], check=True, cwd=ROOT)
        secs = time.perf_counter() - t0
        print(f"whole pipeline on the {longest:.0f} s clip: {secs:.0f} s ({secs / 60:.1f} min)", flush=True)
        out["pipeline"] = {"clip_seconds": longest, "seconds": round(secs, 1)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
