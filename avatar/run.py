"""``python -m avatar.run video=clip.mp4``: the Hydra edge of the pipeline.

Everything below Hydra is plain Python: see :func:`pipeline.runner.run_pipeline`.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

import hydra
from omegaconf import DictConfig

log = logging.getLogger("avatar")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from pipeline.runner import run_pipeline

    if cfg.get("threads"):
        import torch

        torch.set_num_threads(int(cfg.threads))
    try:
        run_pipeline(cfg)
    except (ValueError, FileNotFoundError, KeyError) as e:  # bad input: one clear line, no traceback
        log.error("%s: %s", type(e).__name__, e)
        sys.exit(2)


def _terminate(signum, frame):  # noqa: ARG001
    # SIGTERM (kill, timeout, a cluster's pre-emption) -> SystemExit, so every ``finally`` runs: the
    # stage being built is removed, the W&B run is closed; finished recon frames stay cached.
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    os.environ.setdefault("WANDB_SILENT", "true")
    signal.signal(signal.SIGTERM, _terminate)
    main()
