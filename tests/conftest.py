"""Shared fixtures: small synthetic data the tests make themselves."""

from __future__ import annotations

import logging

import pytest
import torch

logging.getLogger("warp").setLevel(logging.ERROR)
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def anny_body():
    """The embedded Anny backend (first build of Anny's cache takes ~40 s, once per machine)."""
    from foundation.body import build_body_model

    return build_body_model()


@pytest.fixture(scope="session")
def smplx_npz(tmp_path_factory):
    """Path to a synthetic model file in the SMPL-X .npz format."""
    from tests.fixtures.synthetic_smplx import write_synthetic_smplx_npz

    return write_synthetic_smplx_npz(tmp_path_factory.mktemp("smplx") / "SMPLX_NEUTRAL.npz")


@pytest.fixture(scope="session")
def smplx_body(smplx_npz):
    from foundation.body import BodyModelConfig, build_body_model

    return build_body_model(BodyModelConfig(backend="smplx", model_path=str(smplx_npz)))
