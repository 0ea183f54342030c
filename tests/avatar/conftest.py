import pytest

from tests.fixtures.toy import make_toy_subject, random_poses, toy_recon


@pytest.fixture(scope="session")
def toy(anny_body):
    """(subject, recon with 6 smoothly posed frames) on the Anny body."""
    subject = make_toy_subject(anny_body)
    recon = toy_recon(anny_body, subject, random_poses(anny_body, 6, seed=0))
    return subject, recon
