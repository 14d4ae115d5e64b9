import cv2
import numpy as np
import pytest

from dfa_ray.data import synthetic as syn
from dfa_ray.data.images import decode_image
from dfa_ray.skeleton import JOINT_NAMES
from tests.helpers import project


def test_frames_are_a_pure_function_of_domain_split_index_and_seed():
    a = syn.render_frame("synthetic-real", "train", 5, seed=1)
    b = syn.render_frame("synthetic-real", "train", 5, seed=1)
    c = syn.render_frame("synthetic-real", "train", 6, seed=1)
    assert a["image"] == b["image"] and np.array_equal(a["joints_3d"], b["joints_3d"])
    assert a["image"] != c["image"]
    assert [r["frame_id"] for r in syn.generate("synthetic-source", "test", 2, start=3)] == [
        "synthetic-source/test/0/0000003",
        "synthetic-source/test/0/0000004",
    ]


@pytest.mark.parametrize("domain", syn.DOMAINS)
def test_rows_follow_the_schema_and_joints_2d_is_the_projection(domain):
    for row in syn.generate(domain, "train", 20, crop_size=96):
        image = decode_image(row["image"])
        assert image.shape == (96, 96, 3)
        assert row["joints_2d"].shape == (17, 2) and row["joints_3d"].shape == (17, 3)
        pixels = project(row["joints_3d"][None].astype(np.float64), row["camera"][None].astype(np.float64))[0]
        np.testing.assert_allclose(row["joints_2d"], pixels, atol=1e-2)
        assert np.all((row["joints_2d"] > -1) & (row["joints_2d"] < 96))  # the person is inside the crop
        assert row["action"] in syn.ACTIONS


def test_bone_lengths_are_human_and_stable_per_subject():
    rows = list(syn.generate("synthetic-source", "train", 200))
    shin = JOINT_NAMES.index("r_ankle"), JOINT_NAMES.index("r_knee")
    lengths = {}
    for row in rows:
        j = row["joints_3d"].astype(np.float64)
        lengths.setdefault(row["subject"], []).append(np.linalg.norm(j[shin[0]] - j[shin[1]]))
        reach = np.linalg.norm(j - j[0], axis=1).max()
        assert 500 < reach < 1250  # ankles reach ~1.1 m from the pelvis
    for values in lengths.values():
        assert np.ptp(values) < 0.5 and 350 < values[0] < 520  # one body per subject
    assert len({round(v[0]) for v in lengths.values()}) > 1  # subjects differ


def test_train_and_test_subjects_are_disjoint_and_domains_differ():
    for domain in syn.DOMAINS:
        train = {r["subject"] for r in syn.generate(domain, "train", 60)}
        test = {r["subject"] for r in syn.generate(domain, "test", 30)}
        assert train and test and not train & test
    source = {r["subject"] for r in syn.generate("synthetic-source", "train", 60)}
    real = {r["subject"] for r in syn.generate("synthetic-real", "train", 60)}
    assert not source & real


def test_real_domain_is_visually_busier_than_source():
    # Mean horizontal gradient after a blur that removes pixel noise: clutter and shading, not grain.
    def busyness(domain):
        images = [decode_image(r["image"]).astype(np.float64) for r in syn.generate(domain, "train", 30)]
        return np.mean(
            [np.abs(np.diff(cv2.GaussianBlur(i, (0, 0), 2).mean(-1), axis=1)).mean() for i in images]
        )

    assert busyness("synthetic-real") > 1.5 * busyness("synthetic-source")


def test_unknown_domain_and_split_are_named():
    with pytest.raises(ValueError, match="unknown synthetic domain 'h36m'"):
        syn.render_frame("h36m", "train", 0)
    with pytest.raises(ValueError, match="unknown split 'val'"):
        syn.render_frame("synthetic-real", "val", 0)


def test_outlines_keep_a_limb_visible_over_a_part_of_its_own_colour():
    # A flat limb over the torso in the same colour vanishes; its rim must not (source frames are learnable).
    colour = [120, 60, 200]
    p, q = np.array([20.0, 32.0]), np.array([44.0, 32.0])
    flat, outlined = np.full((64, 64, 3), colour, np.uint8), np.full((64, 64, 3), colour, np.uint8)
    syn._limb(flat, p, q, 8, colour, shaded=False, outlined=False)
    syn._limb(outlined, p, q, 8, colour, shaded=False, outlined=True)
    assert np.all(flat == colour)
    assert np.abs(outlined.astype(int) - colour).max() > 40
