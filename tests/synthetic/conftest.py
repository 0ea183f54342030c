"""Fixtures for the synthetic-data tests: one clothed subject built once per session (~5 s)."""

from __future__ import annotations

import pytest
import torch

from synthetic.garments import Garment, Outfit
from synthetic.sample import Subject, clothe_subject


@pytest.fixture(scope="session")
def subject() -> Subject:
    """A subject wearing every kind of layer at once: shoes, a flared skirt, a loose shirt, a jacket, hair."""
    outfit = Outfit((
        Garment("shoes", thickness=0.007, extent=0.05, seed=1),
        Garment("skirt", thickness=0.006, wrinkle_amp=0.004, extent=0.55, hem=0.08, flare=0.3, pattern="stripes",
                color=(0.2, 0.3, 0.7), seed=2),
        Garment("loose_shirt", thickness=0.007, looseness=0.02, wrinkle_amp=0.004, extent=0.4, hem=0.1,
                pattern="checks", color=(0.8, 0.2, 0.2), seed=3),
        Garment("jacket", thickness=0.012, looseness=0.01, wrinkle_amp=0.003, extent=0.95, hem=0.1, neck_depth=0.05,
                color=(0.1, 0.5, 0.2), seed=4),
        Garment("hair", thickness=0.015, extent=0.3, pattern="noise", color=(0.2, 0.1, 0.05), seed=5),
    ))
    return Subject((0.5, -0.5, 0.3, -1.0, 0.2, 0.5, 0.0, 0.0, 0.0, 0.0), outfit)


@pytest.fixture(scope="session")
def clothed(anny_body, subject):
    with torch.no_grad():
        return clothe_subject(anny_body, subject)


@pytest.fixture(scope="session")
def rest_body(anny_body, subject):
    p = anny_body.zero_params(1)
    p.betas = subject.betas_tensor()
    with torch.no_grad():
        return anny_body(p)
