import numpy as np
import pytest

from dfa_ray.method import skeleton as sk


def test_h36m_order_and_tree():
    assert sk.JOINT_NAMES[:4] == ("pelvis", "r_hip", "r_knee", "r_ankle")
    assert sk.JOINT_NAMES[13] == "l_wrist" and sk.JOINT_NAMES[16] == "r_wrist"
    assert len(sk.BONES) == 16
    # Every joint reaches the root through its parents.
    for j in range(sk.NUM_JOINTS):
        seen = 0
        while j != sk.ROOT:
            j = sk.PARENTS[j]
            seen += 1
            assert seen < sk.NUM_JOINTS


def test_flip_permutation_swaps_left_and_right_names():
    for j, k in enumerate(sk.FLIP_PERMUTATION):
        name, mirror = sk.JOINT_NAMES[j], sk.JOINT_NAMES[k]
        if name[:2] in ("l_", "r_"):
            assert mirror == {"l_": "r_", "r_": "l_"}[name[:2]] + name[2:]
        else:
            assert mirror == name
    assert [sk.FLIP_PERMUTATION[k] for k in sk.FLIP_PERMUTATION] == list(range(sk.NUM_JOINTS))


def test_smpl_mapping_takes_named_joints_and_extrapolates_head():
    smpl = np.random.default_rng(0).normal(size=(5, 24, 3))
    mapped, valid = sk.map_joints(smpl, sk.SMPL_TO_H36M)
    assert mapped.shape == (5, 17, 3) and valid.all()
    idx = sk.SMPL_JOINT_NAMES.index
    np.testing.assert_allclose(mapped[:, sk.JOINT_NAMES.index("l_wrist")], smpl[:, idx("l_wrist")])
    np.testing.assert_allclose(mapped[:, sk.JOINT_NAMES.index("r_knee")], smpl[:, idx("r_knee")])
    head = 2 * smpl[:, idx("head")] - smpl[:, idx("neck")]
    np.testing.assert_allclose(mapped[:, sk.JOINT_NAMES.index("head")], head)


def test_mpii_mapping_marks_missing_and_invisible_joints_invalid():
    mpii = np.random.default_rng(1).normal(size=(2, 16, 2))
    visible = np.ones((2, 16), np.uint8)
    visible[1, sk.MPII_JOINT_NAMES.index("l_wrist")] = 0
    mapped, valid = sk.map_joints(mpii, sk.MPII_TO_H36M, visible)
    no_counterpart = {sk.JOINT_NAMES.index("spine"), sk.JOINT_NAMES.index("neck_nose")}
    assert {j for j in range(17) if not valid[0, j]} == no_counterpart
    assert not valid[1, sk.JOINT_NAMES.index("l_wrist")]
    np.testing.assert_allclose(
        mapped[0, sk.JOINT_NAMES.index("head")], mpii[0, sk.MPII_JOINT_NAMES.index("head_top")]
    )
    assert np.all(mapped[~valid.astype(bool)] == 0)


def test_map_joints_rejects_wrong_joint_count():
    with pytest.raises(ValueError, match="expected 24 source joints"):
        sk.map_joints(np.zeros((3, 17, 3)), sk.SMPL_TO_H36M)
