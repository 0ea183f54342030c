"""``python -m avatar.run video=clip.mp4``: the Hydra edge of the pipeline.

Everything below Hydra is plain Python: see :func:`avatar.pipeline.run_pipeline`.
"""

from __future__ import annotations

import logging
import os
import sys

import hydra
from omegaconf import DictConfig

log = logging.getLogger("avatar")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from avatar.pipeline import run_pipeline

    if cfg.get("threads"):
        import torch

        torch.set_num_threads(int(cfg.threads))
    try:
        run_pipeline(cfg)
    except (ValueError, FileNotFoundError, KeyError) as e:  # bad input: one clear line, no traceback
        log.error("%s: %s", type(e).__name__, e)
        sys.exit(2)


if __name__ == "__main__":
    os.environ.setdefault("WANDB_SILENT", "true")
    main()
