"""A small trained avatar shared by the animation tests (trained once per session on a toy clip)."""

import pytest

from avatar.artifact import Avatar
from avatar.stage import run_avatar
from foundation.logger import NullLogger
from tests.fixtures.toy import make_toy_subject, random_poses, tiny_avatar_config, toy_recon, toy_tracks


@pytest.fixture(scope="session")
def stage_avatar(anny_body, tmp_path_factory):
    body = anny_body
    subject = make_toy_subject(body)
    recon = toy_recon(body, subject, random_poses(body, 5, seed=2))
    tracks = toy_tracks(body, subject, recon, size=96)
    out = tmp_path_factory.mktemp("run") / ".avatar.tmp"
    out.mkdir()
    av = run_avatar(tracks, recon, tiny_avatar_config(holdout_every=4), body, out, NullLogger())
    av.save(out)
    return Avatar.load(out), out
