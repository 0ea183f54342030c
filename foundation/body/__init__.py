"""Body models speaking SMPL-X parameters (Anny embedded, SMPL-X files via ``smplx``)."""

from foundation.body.model import AnnyBody, BodyModel, BodyModelConfig, SMPLXBody, build_body_model
from foundation.body.params import BodyOutput, SMPLXParams
from foundation.body.skeleton import JOINT_INDEX, SMPLX_JOINT_NAMES, SMPLX_PARENTS

__all__ = ["AnnyBody", "BodyModel", "BodyModelConfig", "BodyOutput", "JOINT_INDEX", "SMPLXBody",
           "SMPLXParams", "SMPLX_JOINT_NAMES", "SMPLX_PARENTS", "build_body_model"]
