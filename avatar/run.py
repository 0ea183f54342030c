"""``python -m avatar.run video=clip.mp4``: the command, the one place Hydra composes ``conf/``.

The composed config is validated against :class:`pipeline.config.PipelineConfig` (the stages'
config dataclasses) and handed to :func:`pipeline.runner.run_pipeline` as a typed object.
This module is the entry point only: the avatar stage (``avatar.stage``) does not import it.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

import hydra
from omegaconf import DictConfig

from pipeline.config import pipeline_config, register_configs

log = logging.getLogger("avatar")

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from pipeline.runner import run_pipeline

    try:
        run_pipeline(pipeline_config(cfg))
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
